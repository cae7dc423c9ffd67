-- The SMS contact directory: who gets warnings by SMS, by commune and role.
CREATE TABLE contacts (
    phone        TEXT    PRIMARY KEY,          -- E.164, +84 and 9 digits
    name         TEXT    NOT NULL,
    commune      TEXT    NOT NULL,
    role         TEXT    NOT NULL,             -- commune_chair | village_head | resident
    language     TEXT    NOT NULL,
    opted_out    BIGINT  NOT NULL,
    updated_ms   BIGINT  NOT NULL
);
CREATE INDEX contacts_by_commune ON contacts (commune, role);
