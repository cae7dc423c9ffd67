//! The Jasmin SMS gateway over its HTTP API (ja-http): a pure half that builds the
//! `POST /send` request, reads Jasmin's answer and its delivery-report (DLR) callbacks; and
//! an I/O half, [`JasminGateway::send`], on the shared [`HttpLink`] (concurrency cap, rate
//! limit, timeout).
//!
//! What Jasmin does, from its documentation (`misc/doc/sources/apis/ja-http/`
//! `sending-mt.rst`, `receiving-dlr.rst`, `example_send_misc.py`) and its source
//! (`jasmin/protocols/http/endpoints/send.py`, `errors.py`, `jasmin/managers/dlr.py`,
//! `content.py`, `jasmin/routing/throwers.py`):
//!
//! | status | body                                        | here                        |
//! |--------|---------------------------------------------|-----------------------------|
//! | 200    | `Success "07033084-5cfd-…"`                 | [`SendOutcome::Accepted`]   |
//! | 400    | `Error "Argument [to] has an invalid value…"` | rejected, permanent       |
//! | 403    | `Error "Authentication failure for username:…"` | rejected, permanent     |
//! | 403    | `Error "User throughput exceeded"`          | rejected, transient         |
//! | 412    | `Error "No route found"`                    | rejected, permanent         |
//! | 412    | `Error "Failover route has no bound connectors"` | rejected, transient    |
//! | 5xx    | `Error "Cannot send submit_sm, …"`          | rejected, transient         |
//!
//! The request is a form body: Jasmin refuses any argument it does not know (400
//! `Argument [x] is unknown.`), and `content` and `hex-content` together. With `coding=0`
//! Jasmin converts `content` from UTF-8 to the GSM 03.38 alphabet itself; with any other
//! coding it forwards `content`'s bytes as they come, so UCS-2 text goes as `hex-content`,
//! the UTF-16BE bytes in hexadecimal (as in the documentation's example
//! `hex-content=0623063106460628` with `coding=8`). That needs the Jasmin user's
//! `set_hex_content` authorization, as `dlr-level` needs `set_dlr_level` and
//! `dlr-method` needs `http_set_dlr_method`.
//!
//! Delivery reports come to the `dlr-url` with our reference and the gateway's secret in
//! its query ([`jasmin_dlr_url`]), the report itself in a form body (`dlr-method=POST`):
//! `id` (Jasmin's message id, the UUID of the `Success` answer), `message_status`,
//! `level`, and for level 2 `id_smsc`, `sub`, `dlvrd`, `subdate`, `donedate`, `err`,
//! `text`. With `dlr-level=3` a message gets a level-1 report (the SMSC's `submit_sm_resp`,
//! an `ESME_*` status) and a level-2 one (the handset's receipt, `DELIVRD` and the like).
//! The endpoint must answer 200 with exactly [`DLR_ACK`], or Jasmin sends the report
//! again (3 times, 30 s apart by default).
//!
//! Secrets (the password and the DLR secret) never appear in `Debug` output, in errors or
//! in logs.

use secrecy::ExposeSecret as _;
use std::fmt;

use crate::callback::{DeliveryReport, DlrError, DlrStatus, form_decode, same_secret};
use crate::kannel::{Encoding, KannelConfig, percent_encode};
use crate::link::{GatewayError, HttpGateway, Protocol, Request};
use crate::message::{MessageError, MessageRef, SendOutcome, SmsMessage, UnexpectedAnswer, is_e164};

/// Jasmin's send endpoint, appended to [`JasminConfig::base_url`].
pub const SEND_PATH: &str = "/send";

/// The body a delivery-report endpoint must answer with, exactly, for Jasmin to stop
/// sending the report again.
pub const DLR_ACK: &str = "ACK/Jasmin";

/// The reports asked for: 3 is both the SMSC's (level 1: it took the message or refused
/// it) and the handset's (level 2).
pub const DLR_LEVEL: u8 = 3;

const REDACTED: &str = "[redacted]";

// ------------------------------------------------------------------------------------
// Settings
// ------------------------------------------------------------------------------------

/// One Jasmin gateway: its HTTP API, its user, the sender and our DLR endpoint.
/// `Debug` shows the secrets as `[REDACTED]` (`secrecy`).
#[derive(Clone, Debug)]
pub struct JasminConfig {
    /// The HTTP API's root, for example `http://127.0.0.1:1401`; [`SEND_PATH`] is appended.
    pub base_url: String,
    /// The Jasmin user's `username`.
    pub username: String,
    /// The Jasmin user's `password`. Never shown.
    pub password: secrecy::SecretString,
    /// The sender: a registered brandname or a number.
    pub from: String,
    /// Our delivery-report endpoint for this gateway, for example
    /// `https://canhbao.example/api/v1/sms/dlr/jasmin`; the reference and the secret are
    /// added as query parameters.
    pub dlr_url_base: String,
    /// The per-gateway secret that authenticates delivery reports. Never shown.
    pub dlr_secret: secrecy::SecretString,
}

impl JasminConfig {
    /// Every problem with these settings, none if they are usable. The same checks as
    /// [`KannelConfig::problems`].
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        check_url(&mut problems, "base_url", &self.base_url);
        check_url(&mut problems, "dlr_url_base", &self.dlr_url_base);
        if self.base_url.contains('?') {
            problems.push(format!("base_url {:?} must not have a query", self.base_url));
        }
        if self.username.is_empty() {
            problems.push("username is empty".to_owned());
        }
        if self.password.expose_secret().is_empty() {
            problems.push("password is empty".to_owned());
        }
        if self.from.trim().is_empty() {
            problems.push("from (the sender) is empty".to_owned());
        }
        check_secret(&mut problems, self.dlr_secret.expose_secret());
        problems
    }
}

/// An http(s) URL without fragment or whitespace, as Kannel's settings require.
pub(crate) fn check_url(problems: &mut Vec<String>, name: &str, value: &str) {
    if !(value.starts_with("http://") || value.starts_with("https://")) {
        problems.push(format!("{name} {value:?} is not an http(s) URL"));
    } else if value.contains('#') || value.chars().any(char::is_whitespace) {
        problems.push(format!("{name} {value:?} has a fragment or whitespace"));
    }
}

/// A DLR secret of at least [`KannelConfig::MIN_SECRET_CHARS`] characters.
pub(crate) fn check_secret(problems: &mut Vec<String>, secret: &str) {
    if secret.chars().count() < KannelConfig::MIN_SECRET_CHARS {
        problems.push(format!(
            "dlr_secret is shorter than {} characters",
            KannelConfig::MIN_SECRET_CHARS
        ));
    }
}

// ------------------------------------------------------------------------------------
// The send request (pure)
// ------------------------------------------------------------------------------------

/// Jasmin's `coding` (the SMPP data_coding): 0 for the GSM-7 default alphabet, 8 for UCS-2.
pub fn jasmin_coding(encoding: Encoding) -> u8 {
    match encoding {
        Encoding::Gsm7 => 0,
        Encoding::Ucs2 => 8,
    }
}

/// Refuses what no gateway can send: a number that is not E.164, an empty text, or a
/// GSM-7 message with characters outside the alphabet.
pub(crate) fn check_message(msg: &SmsMessage) -> Result<(), MessageError> {
    if !is_e164(&msg.to) {
        return Err(MessageError::BadNumber(msg.to.chars().take(32).collect()));
    }
    if msg.text.is_empty() {
        return Err(MessageError::EmptyText);
    }
    if msg.encoding == Encoding::Gsm7 && !crate::text::is_gsm7(&msg.text) {
        return Err(MessageError::NotGsm7);
    }
    Ok(())
}

/// `{base}?ref=<ref>&secret=<secret>` (`&` if the base has a query already), both
/// percent-encoded: the callback URL a gateway calls with a delivery report.
pub(crate) fn callback_url(base: &str, message_ref: &MessageRef, secret: &str) -> String {
    let mut url = base.to_owned();
    url.push(if base.contains('?') { '&' } else { '?' });
    url.push_str("ref=");
    percent_encode(message_ref.as_str(), &mut url);
    url.push_str("&secret=");
    percent_encode(secret, &mut url);
    url
}

/// The `dlr-url` for one message: our endpoint with the reference and the secret.
pub fn jasmin_dlr_url(config: &JasminConfig, message_ref: &MessageRef) -> String {
    callback_url(
        &config.dlr_url_base,
        message_ref,
        config.dlr_secret.expose_secret(),
    )
}

/// The text as upper-case hexadecimal UTF-16BE, for `hex-content`.
pub fn ucs2_hex(text: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(text.len() * 4);
    for unit in text.encode_utf16() {
        for byte in unit.to_be_bytes() {
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
    }
    out
}

/// One `POST /send`: the URL and the form body. The body holds the password, so `Debug`
/// shows only the URL.
#[derive(Clone, PartialEq, Eq)]
pub struct JasminRequest {
    url: String,
    body: String,
}

impl JasminRequest {
    /// `{base_url}/send`; it holds no secret.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The `application/x-www-form-urlencoded` body, with the password: for the HTTP client
    /// only, never for a log.
    pub fn expose_body(&self) -> &str {
        &self.body
    }
}

impl fmt::Debug for JasminRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JasminRequest")
            .field("url", &self.url)
            .field("body", &REDACTED)
            .finish()
    }
}

/// The `POST /send` request for one message.
///
/// `to` goes as digits only, the E.164 number without its `+`: Jasmin accepts both
/// (`^\+{0,1}\d+$`) but passes `to` unchanged into the SMPP `destination_addr`, where an
/// international number (TON 1) carries no `+`.
pub fn jasmin_request(config: &JasminConfig, msg: &SmsMessage) -> Result<JasminRequest, MessageError> {
    check_message(msg)?;
    let to = msg.to.trim_start_matches('+');
    let coding = jasmin_coding(msg.encoding).to_string();
    let level = DLR_LEVEL.to_string();
    let dlr_url = jasmin_dlr_url(config, &msg.message_ref);
    let (content_name, content) = match msg.encoding {
        Encoding::Gsm7 => ("content", msg.text.clone()),
        Encoding::Ucs2 => ("hex-content", ucs2_hex(&msg.text)),
    };
    let fields: [(&str, &str); 10] = [
        ("username", &config.username),
        ("password", config.password.expose_secret()),
        ("to", to),
        ("from", &config.from),
        ("coding", &coding),
        ("dlr", "yes"),
        ("dlr-url", &dlr_url),
        ("dlr-level", &level),
        ("dlr-method", "POST"),
        (content_name, &content),
    ];
    let mut body = String::new();
    for (name, value) in fields {
        if !body.is_empty() {
            body.push('&');
        }
        body.push_str(name);
        body.push('=');
        percent_encode(value, &mut body);
    }
    let mut url = config.base_url.trim_end_matches('/').to_owned();
    url.push_str(SEND_PATH);
    Ok(JasminRequest { url, body })
}

// ------------------------------------------------------------------------------------
// Jasmin's answer (pure)
// ------------------------------------------------------------------------------------

/// The message id in a `Success "<id>"` answer.
pub fn jasmin_message_id(body: &str) -> Option<&str> {
    let id = body.trim().strip_prefix("Success \"")?.strip_suffix('"')?;
    (!id.is_empty() && !id.contains('"')).then_some(id)
}

/// Reads Jasmin's answer to `POST /send`.
pub fn parse_jasmin_answer(status: u16, body: &str) -> Result<SendOutcome, UnexpectedAnswer> {
    let text = body.trim();
    if (200..300).contains(&status) {
        return match jasmin_message_id(text) {
            Some(_) => Ok(SendOutcome::Accepted),
            None => Err(UnexpectedAnswer {
                status,
                body: text.chars().take(200).collect(),
            }),
        };
    }
    // errors.py: ThroughputExceededError is a 403, ConnectorNotFoundError a 412; both pass
    // once the load drops or a connector binds again.
    let passing = matches!(
        (status, text),
        (403, "Error \"User throughput exceeded\"")
            | (412, "Error \"Failover route has no bound connectors\"")
    );
    Ok(crate::message::rejected(status, text, passing))
}

// ------------------------------------------------------------------------------------
// Delivery reports (pure)
// ------------------------------------------------------------------------------------

/// The decoded `key=value` pairs of a query string or a form body, in order.
pub(crate) struct Fields(Vec<(String, String)>);

impl Fields {
    /// A form body: pairs split on `&`.
    pub(crate) fn form(text: &str) -> Self {
        Self::split(text, &['&'])
    }

    /// A callback's query string, with or without its `?`. A `?` inside it also separates
    /// pairs: Jasmin sends a GET report as `dlr-url + "?" + args` even when the dlr-url has a
    /// query already, and our own values never hold a bare `?` (they are percent-encoded).
    pub(crate) fn query(text: &str) -> Self {
        Self::split(text.strip_prefix('?').unwrap_or(text), &['&', '?'])
    }

    fn split(text: &str, separators: &[char]) -> Self {
        let pairs = text
            .split(separators)
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                (form_decode(key), form_decode(value))
            })
            .collect();
        Self(pairs)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The last value of `key`.
    pub(crate) fn last(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The one value of `key`; a key given twice is refused.
    pub(crate) fn unique(&self, key: &'static str) -> Result<Option<&str>, DlrError> {
        let mut values = self.0.iter().filter(|(k, _)| k == key);
        let first = values.next().map(|(_, v)| v.as_str());
        match values.next() {
            Some(_) => Err(DlrError::Duplicate(key)),
            None => Ok(first),
        }
    }
}

/// Authenticates a callback by the `secret` of its query (first, in constant time: a
/// callback that fails says nothing more about itself), then reads its `ref`.
pub(crate) fn authenticate_callback(query: &Fields, secret: &str) -> Result<MessageRef, DlrError> {
    if secret.is_empty() {
        return Err(DlrError::NoSecretConfigured);
    }
    let given = query.last("secret").ok_or(DlrError::MissingSecret)?;
    if !same_secret(given, secret) {
        return Err(DlrError::WrongSecret);
    }
    query.unique("secret")?;
    let reference = query.unique("ref")?.ok_or(DlrError::Missing("ref"))?;
    MessageRef::new(reference).map_err(|_| DlrError::BadRef(reference.to_owned()))
}

/// What Jasmin's `message_status` means for us.
///
/// Level 1 (the SMSC's `submit_sm_resp`): `ESME_ROK` is the SMSC taking the message, any
/// other `ESME_*` its refusal. Level 2 (the handset's receipt, SMPP table B-2): `DELIVRD`
/// is final; `ACCEPTD` and `UNKNOWN` say the SMSC has it, `ENROUTE` that it waits for the
/// handset; `UNDELIV`, `EXPIRED`, `REJECTD` and `DELETED` are final failures.
pub fn jasmin_dlr_status(message_status: &str) -> Option<DlrStatus> {
    Some(match message_status {
        "ESME_ROK" => DlrStatus::SmscAccepted,
        s if s.len() > 5
            && s.starts_with("ESME_")
            && s[5..]
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()) =>
        {
            DlrStatus::SmscRejected
        }
        "DELIVRD" => DlrStatus::Delivered,
        "ACCEPTD" | "UNKNOWN" => DlrStatus::SmscAccepted,
        "ENROUTE" => DlrStatus::Buffered,
        "UNDELIV" | "EXPIRED" | "REJECTD" | "DELETED" => DlrStatus::Failed,
        _ => return None,
    })
}

/// Reads one Jasmin delivery-report callback: the secret and our reference from the
/// callback URL's query (the secret first, in constant time), the report from the form
/// body, or from the query when the body is empty (`dlr-method=GET`).
///
/// The report's `id` (Jasmin's message id) goes in `smsc_message_id` and its
/// `message_status` in `reason`. `subdate` and `donedate` are the SMSC's `YYMMDDhhmm` in a
/// time zone nobody states, so `at` stays empty.
pub fn parse_jasmin_dlr(query: &str, body: &str, secret: &str) -> Result<DeliveryReport, DlrError> {
    let query = Fields::query(query);
    let message_ref = authenticate_callback(&query, secret)?;
    let body = Fields::form(body.trim());
    let report = if body.is_empty() { &query } else { &body };
    let id = report
        .unique("id")?
        .filter(|id| !id.is_empty())
        .ok_or(DlrError::Missing("id"))?;
    let level = report.unique("level")?.ok_or(DlrError::Missing("level"))?;
    if !matches!(level, "1" | "2" | "3") {
        return Err(DlrError::BadLevel(level.to_owned()));
    }
    let status_text = report
        .unique("message_status")?
        .ok_or(DlrError::Missing("message_status"))?;
    let status =
        jasmin_dlr_status(status_text).ok_or_else(|| DlrError::UnknownStatus(status_text.to_owned()))?;
    for key in ["id_smsc", "sub", "dlvrd", "subdate", "donedate", "err", "text"] {
        report.unique(key)?;
    }
    Ok(DeliveryReport {
        message_ref,
        status,
        at: None,
        reason: status_text.to_owned(),
        smsc_message_id: Some(id.to_owned()),
        smsc: None,
        to: None,
    })
}

// ------------------------------------------------------------------------------------
// The gateway (I/O)
// ------------------------------------------------------------------------------------

/// One Jasmin HTTP API.
pub type JasminGateway = HttpGateway<JasminConfig>;

impl Protocol for JasminConfig {
    const NAME: &'static str = "jasmin";

    fn problems(&self) -> Vec<String> {
        JasminConfig::problems(self)
    }

    fn endpoint(&self) -> String {
        format!("{}{SEND_PATH}", self.base_url.trim_end_matches('/'))
    }

    fn request(&self, msg: &SmsMessage) -> Result<Request, GatewayError> {
        let request = jasmin_request(self, msg)?;
        Ok(Box::new(move |c: &reqwest::Client| {
            c.post(request.url())
                .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(request.expose_body().to_owned())
        }))
    }

    fn read_answer(&self, status: u16, body: &str) -> Result<SendOutcome, UnexpectedAnswer> {
        parse_jasmin_answer(status, body)
    }

    fn message_id<'a>(&self, body: &'a str) -> Option<&'a str> {
        jasmin_message_id(body)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const SECRET: &str = "0123456789abcdef-secret";

    fn config() -> JasminConfig {
        JasminConfig {
            base_url: "http://127.0.0.1:1401/".to_owned(),
            username: "canhbao".to_owned(),
            password: "jasm1n&pw=+".to_owned().into(),
            from: "CANHBAO".to_owned(),
            dlr_url_base: "http://127.0.0.1:23080/dlr".to_owned(),
            dlr_secret: SECRET.to_owned().into(),
        }
    }

    fn message(to: &str, text: &str, encoding: Encoding) -> SmsMessage {
        SmsMessage {
            to: to.to_owned(),
            text: text.to_owned(),
            encoding,
            message_ref: MessageRef::new("a1b2:84912345678").unwrap(),
        }
    }

    /// The form body as Jasmin's Twisted reads it: every pair, decoded.
    fn fields_of(body: &str) -> Vec<(String, String)> {
        Fields::form(body).0
    }

    fn utf16_hex_decode(hex: &str) -> String {
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let units: Vec<u16> = bytes
            .chunks(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect();
        String::from_utf16(&units).unwrap()
    }

    #[test]
    fn the_request_is_a_form_with_every_field_jasmin_knows_and_no_other() {
        let request =
            jasmin_request(&config(), &message("+84912345678", "Cảnh báo lũ", Encoding::Ucs2)).unwrap();
        assert_eq!(request.url(), "http://127.0.0.1:1401/send");
        assert_eq!(
            request.expose_body(),
            "username=canhbao&password=jasm1n%26pw%3D%2B&to=84912345678&from=CANHBAO&coding=8\
             &dlr=yes&dlr-url=http%3A%2F%2F127.0.0.1%3A23080%2Fdlr%3Fref%3Da1b2%253A84912345678\
             %26secret%3D0123456789abcdef-secret&dlr-level=3&dlr-method=POST\
             &hex-content=00431EA3006E00680020006200E1006F0020006C0169"
        );
        let names: Vec<String> = fields_of(request.expose_body())
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(
            names,
            [
                "username",
                "password",
                "to",
                "from",
                "coding",
                "dlr",
                "dlr-url",
                "dlr-level",
                "dlr-method",
                "hex-content"
            ]
        );
    }

    #[test]
    fn vietnamese_goes_as_utf16_hex_and_comes_back_intact() {
        for text in [
            "Cảnh báo lũ cấp 3 tại xã Hữu Lũng. Di chuyển ngay!",
            "Sơ tán ngay: \"nước\" lên & 1+1=2\nđê vỡ",
            "emoji 🌊 takes a surrogate pair",
        ] {
            let request = jasmin_request(&config(), &message("+84912345678", text, Encoding::Ucs2)).unwrap();
            let fields = fields_of(request.expose_body());
            let hex = &fields.iter().find(|(k, _)| k == "hex-content").unwrap().1;
            assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()), "{hex}");
            assert_eq!(utf16_hex_decode(hex), text);
            assert!(
                fields.iter().all(|(k, _)| k != "content"),
                "content and hex-content together"
            );
            assert!(fields.contains(&("coding".to_owned(), "8".to_owned())));
        }
    }

    #[test]
    fn gsm7_text_goes_as_content_and_survives_form_encoding() {
        for text in [
            "a&b=c+d",
            "say \"hi\" 'there'\nnew line\r\n",
            "100% @ {braces} ~ ^ | € [x]",
            "a?b#c;d/e",
        ] {
            let request = jasmin_request(&config(), &message("+84912345678", text, Encoding::Gsm7)).unwrap();
            let body = request.expose_body();
            assert!(
                !body.contains('\n') && !body.contains('"') && !body.contains(' '),
                "{body}"
            );
            let fields = fields_of(body);
            assert_eq!(fields.len(), 10, "{fields:?}");
            assert!(
                fields.contains(&("content".to_owned(), text.to_owned())),
                "{fields:?}"
            );
            assert!(fields.contains(&("coding".to_owned(), "0".to_owned())));
        }
    }

    #[test]
    fn the_dlr_url_carries_our_reference_and_secret_percent_encoded_once() {
        let mut cfg = config();
        cfg.dlr_url_base = "https://x.example/dlr?gw=j%201".to_owned();
        cfg.dlr_secret = "Zq%C3+/&x=1 ~Lạng sơn?".to_owned().into();
        let reference = MessageRef::new("r-1").unwrap();
        let url = jasmin_dlr_url(&cfg, &reference);
        assert_eq!(
            url,
            "https://x.example/dlr?gw=j%201&ref=r-1\
             &secret=Zq%25C3%2B%2F%26x%3D1%20~L%E1%BA%A1ng%20s%C6%A1n%3F"
        );
        let query = url.split_once('?').unwrap().1;
        let report = parse_jasmin_dlr(
            query,
            "id=x&level=1&message_status=ESME_ROK",
            cfg.dlr_secret.expose_secret(),
        )
        .unwrap();
        assert_eq!(report.message_ref, reference);
    }

    #[test]
    fn messages_that_cannot_be_sent_are_refused_before_any_request() {
        fn check(to: &str, text: &str, encoding: Encoding, expected: MessageError) {
            assert_eq!(
                jasmin_request(&config(), &message(to, text, encoding)),
                Err(expected)
            );
        }
        check(
            "84912345678",
            "x",
            Encoding::Gsm7,
            MessageError::BadNumber("84912345678".to_owned()),
        );
        check(
            "+84 912345678",
            "x",
            Encoding::Gsm7,
            MessageError::BadNumber("+84 912345678".to_owned()),
        );
        check("+84912345678", "", Encoding::Ucs2, MessageError::EmptyText);
        check("+84912345678", "Cảnh báo", Encoding::Gsm7, MessageError::NotGsm7);
    }

    #[test]
    fn jasmins_documented_answers_are_read() {
        use crate::message::RejectKind::{Permanent, Transient};
        fn check(status: u16, body: &str, expected: Result<SendOutcome, UnexpectedAnswer>) {
            assert_eq!(parse_jasmin_answer(status, body), expected, "{status} {body:?}");
        }
        let rejected = |status: u16, reason: &str, kind| {
            Ok(SendOutcome::Rejected {
                status,
                reason: reason.to_owned(),
                kind,
            })
        };
        let unexpected = |status: u16, body: &str| {
            Err(UnexpectedAnswer {
                status,
                body: body.to_owned(),
            })
        };
        check(
            200,
            "Success \"07033084-5cfd-4812-90a4-e4d24ffb6e3d\"",
            Ok(SendOutcome::Accepted),
        );
        check(
            200,
            "Success \"07033084-5cfd-4812-90a4-e4d24ffb6e3d\"\n",
            Ok(SendOutcome::Accepted),
        );
        for body in [
            "Error \"Mandatory arguments not found, please refer to the HTTPAPI specifications.\"",
            "Error \"Argument [foo] is unknown.\"",
            "Error \"content and hex-content cannot be used both in same request.\"",
        ] {
            check(400, body, rejected(400, body, Permanent));
        }
        for body in [
            "Error \"Authentication failure for username:canhbao\"",
            "Error \"Cannot charge submit_sm, check RouterPB log file for details\"",
        ] {
            check(403, body, rejected(403, body, Permanent));
        }
        check(
            412,
            "Error \"No route found\"",
            rejected(412, "Error \"No route found\"", Permanent),
        );
        check(
            403,
            "Error \"User throughput exceeded\"",
            rejected(403, "Error \"User throughput exceeded\"", Transient),
        );
        check(
            412,
            "Error \"Failover route has no bound connectors\"",
            rejected(412, "Error \"Failover route has no bound connectors\"", Transient),
        );
        let fallback = "Error \"Cannot send submit_sm, check SMPPClientManagerPB log file for details\"";
        check(500, fallback, rejected(500, fallback, Transient));
        check(503, "", rejected(503, "", Transient));
        check(408, "", rejected(408, "", Transient));
        check(429, "", rejected(429, "", Transient));
        check(404, "Not Found", rejected(404, "Not Found", Permanent));
        check(
            200,
            "Error \"No route found\"",
            unexpected(200, "Error \"No route found\""),
        );
        check(200, "Success \"\"", unexpected(200, "Success \"\""));
        check(200, "Success 123", unexpected(200, "Success 123"));
        check(200, "", unexpected(200, ""));
        let long = "x".repeat(500);
        match parse_jasmin_answer(500, &long) {
            Ok(SendOutcome::Rejected { reason, .. }) => assert_eq!(reason.len(), 200),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            jasmin_message_id("Success \"07033084-5cfd-4812-90a4-e4d24ffb6e3d\""),
            Some("07033084-5cfd-4812-90a4-e4d24ffb6e3d")
        );
    }

    fn auth() -> String {
        format!("ref=alert-7.v2%3A84912345678&secret={SECRET}")
    }

    #[test]
    fn every_status_jasmin_sends_maps_to_ours() {
        use DlrStatus::*;
        let cases = [
            ("1", "ESME_ROK", SmscAccepted),
            ("1", "ESME_RINVNUMDESTS", SmscRejected),
            ("1", "ESME_RTHROTTLED", SmscRejected),
            ("1", "ESME_RSUBMITFAIL", SmscRejected),
            ("2", "DELIVRD", Delivered),
            ("2", "ACCEPTD", SmscAccepted),
            ("2", "UNKNOWN", SmscAccepted),
            ("2", "ENROUTE", Buffered),
            ("2", "UNDELIV", Failed),
            ("2", "EXPIRED", Failed),
            ("2", "REJECTD", Failed),
            ("2", "DELETED", Failed),
            ("3", "DELIVRD", Delivered),
        ];
        for (level, word, expected) in cases {
            let body = format!(
                "id=16fd2706-8baf-433b-82eb-8c7fada847da&level={level}&message_status={word}\
                 &id_smsc=2567&sub=001&dlvrd=001&subdate=1311022338&donedate=1311022338&err=000\
                 &text=Canh+bao+lu"
            );
            let report = parse_jasmin_dlr(&auth(), &body, SECRET).unwrap();
            assert_eq!(report.status, expected, "{word}");
            assert_eq!(report.reason, word);
            assert_eq!(report.message_ref.as_str(), "alert-7.v2:84912345678");
            assert_eq!(
                report.smsc_message_id.as_deref(),
                Some("16fd2706-8baf-433b-82eb-8c7fada847da")
            );
            assert_eq!((report.at, report.smsc, report.to), (None, None, None));
        }
        assert!(!jasmin_dlr_status("UNKNOWN").unwrap().is_final());
        assert!(!jasmin_dlr_status("ENROUTE").unwrap().is_final());
        assert!(jasmin_dlr_status("ESME_RINVDSTADR").unwrap().is_final());
        for bad in ["", "ESME_", "esme_rok", "delivrd", "DELIVERED", "ESME_R OK", "8"] {
            assert_eq!(jasmin_dlr_status(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_report_by_get_reads_its_fields_from_the_query_even_after_a_second_question_mark() {
        // throwers.py: baseurl += '?%s' % urllib.urlencode(args)
        let query = format!("{}?id=16fd2706&level=2&message_status=UNDELIV&err=012", auth());
        let report = parse_jasmin_dlr(&query, "", SECRET).unwrap();
        assert_eq!(report.status, DlrStatus::Failed);
        assert_eq!(report.smsc_message_id.as_deref(), Some("16fd2706"));
        let plain = format!("?{}&id=x&level=1&message_status=ESME_ROK", auth());
        assert_eq!(
            parse_jasmin_dlr(&plain, "  \r\n", SECRET).unwrap().status,
            DlrStatus::SmscAccepted
        );
    }

    #[test]
    fn bad_reports_are_refused_and_the_secret_comes_first() {
        fn check(query: &str, body: &str, expected: DlrError) {
            assert_eq!(
                parse_jasmin_dlr(query, body, SECRET),
                Err(expected),
                "{query} | {body}"
            );
        }
        let ok = "id=x&level=1&message_status=ESME_ROK";
        let s = format!("secret={SECRET}");
        check("ref=a", ok, DlrError::MissingSecret);
        check("ref=a&secret=", ok, DlrError::WrongSecret);
        check("ref=a&secret=0123456789abcdef-secreT", ok, DlrError::WrongSecret);
        check(&format!("ref=a&secret={SECRET}x"), ok, DlrError::WrongSecret);
        // A secret in the body does not count: it must be in our URL.
        check("ref=a", &format!("{s}&{ok}"), DlrError::MissingSecret);
        // Nothing else is looked at before the secret.
        check("ref=a&ref=b&secret=x", "garbage", DlrError::WrongSecret);
        check(&format!("{s}&{s}&ref=a"), ok, DlrError::Duplicate("secret"));
        check(&format!("{s}&ref=a&ref=b"), ok, DlrError::Duplicate("ref"));
        check(&s, ok, DlrError::Missing("ref"));
        check(&format!("{s}&ref=a+b"), ok, DlrError::BadRef("a b".to_owned()));
        let q = format!("{s}&ref=a");
        check(&q, "level=1&message_status=ESME_ROK", DlrError::Missing("id"));
        check(&q, "id=&level=1&message_status=ESME_ROK", DlrError::Missing("id"));
        check(&q, "id=x&message_status=ESME_ROK", DlrError::Missing("level"));
        check(&q, "id=x&level=1", DlrError::Missing("message_status"));
        check(
            &q,
            "id=x&level=4&message_status=ESME_ROK",
            DlrError::BadLevel("4".to_owned()),
        );
        check(
            &q,
            "id=x&level=2&message_status=DELIVERED",
            DlrError::UnknownStatus("DELIVERED".to_owned()),
        );
        check(&q, &format!("{ok}&id=y"), DlrError::Duplicate("id"));
        check(
            &q,
            &format!("{ok}&message_status=DELIVRD"),
            DlrError::Duplicate("message_status"),
        );
        check(&q, &format!("{ok}&err=1&err=2"), DlrError::Duplicate("err"));
        check(&q, "", DlrError::Missing("id"));
        assert_eq!(parse_jasmin_dlr(&q, ok, ""), Err(DlrError::NoSecretConfigured));
        // Unknown extra fields are Jasmin's business.
        assert!(parse_jasmin_dlr(&q, &format!("{ok}&connector=smppc1"), SECRET).is_ok());
    }

    #[test]
    fn settings_report_every_problem_at_once() {
        let bad = JasminConfig {
            base_url: "127.0.0.1:1401?x".to_owned(),
            username: String::new(),
            password: String::new().into(),
            from: " ".to_owned(),
            dlr_url_base: "http://h/dlr#x".to_owned(),
            dlr_secret: "short".to_owned().into(),
        };
        assert_eq!(bad.problems().len(), 7, "{:?}", bad.problems());
        assert!(config().problems().is_empty());
        match JasminGateway::new(bad, crate::link::GatewayLimits::default()) {
            Err(GatewayError::Config(problems)) => assert_eq!(problems.len(), 7),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let cfg = config();
        let request = jasmin_request(&cfg, &message("+84912345678", "x", Encoding::Gsm7)).unwrap();
        let gateway = JasminGateway::new(cfg.clone(), crate::link::GatewayLimits::default()).unwrap();
        for shown in [format!("{cfg:?}"), format!("{request:?}"), format!("{gateway:?}")] {
            assert!(!shown.contains("jasm1n"), "{shown}");
            assert!(!shown.contains(SECRET), "{shown}");
            assert!(!shown.contains("84912345678"), "{shown}");
        }
    }
}
