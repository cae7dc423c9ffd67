-- Forecast values per station, parameter and valid hour. A newer issue replaces an older
-- one for the same hour (whatever source it came from), so that a series holds one model
-- answer per hour and sums over it never count an hour twice.
CREATE TABLE forecasts (
    status TEXT NOT NULL,
    station TEXT NOT NULL,
    parameter TEXT NOT NULL,
    valid_ms BIGINT NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    issued_ms BIGINT NOT NULL,
    received_ms BIGINT NOT NULL,
    source TEXT NOT NULL,
    PRIMARY KEY (status, station, parameter, valid_ms)
);
CREATE INDEX forecasts_by_status_time ON forecasts (status, valid_ms);
