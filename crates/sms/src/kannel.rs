//! The Kannel SMS gateway: a pure half that builds the `sendsms` request, reads Kannel's
//! answer and its delivery-report (DLR) callbacks; and an I/O half,
//! [`KannelGateway::send`], that sends one message under a concurrency cap, a rate limit (`governor`)
//! and a timeout.
//!
//! What Kannel answers (smsbox 1.4.5, checked against a live Kannel in
//! `tests/kannel.rs` and `shared/data/sms/kannel-http-transcript.txt`):
//!
//! | status | body                                  | here                          |
//! |--------|---------------------------------------|-------------------------------|
//! | 202    | `0: Accepted for delivery`            | [`SendOutcome::Accepted`]     |
//! | 202    | `3: Queued for later delivery`        | [`SendOutcome::Queued`]       |
//! | 403    | `Authorization failed for sendsms`    | rejected, permanent           |
//! | 403    | `Not routable. Do not try again.`     | rejected, permanent           |
//! | 400    | `Missing receiver number, rejected`…  | rejected, permanent           |
//! | 503    | `Temporal failure, try again later.`  | rejected, transient           |
//! | 500    | `Sending failed.`                     | rejected, transient           |
//!
//! A rejection means Kannel took nothing: it is safe to retry or to move the message to
//! another gateway. Kannel does not deduplicate, so the one place where a copy can be
//! sent twice is an answer that never came back (a timeout or a broken connection after
//! the request left) or a 2xx we cannot read: [`GatewayError::may_have_sent`] tells those
//! apart from the failures where nothing reached Kannel.
//!
//! The delivery-report URL carries our message reference and the gateway's secret, and
//! asks Kannel for every report type (`dlr-mask` = [`DLR_MASK`]); see [`dlr_url`].
//!
//! Secrets (the sendsms password and the DLR secret) never appear in `Debug` output, in
//! errors or in logs: [`KannelConfig`] and [`SendsmsUrl`] redact them, and transport
//! errors are stripped of their URL.

use secrecy::ExposeSecret as _;
use std::fmt;

use chrono::DateTime;

use crate::callback::{DeliveryReport, DlrError, DlrStatus, form_decode, same_secret};
use crate::link::{GatewayError, HttpGateway, Protocol, Request};
use crate::message::{
    MessageError, MessageRef, SendOutcome, SmsMessage, UnexpectedAnswer, is_e164, rejected,
};
pub use crate::text::Encoding;

/// smsbox's `sendsms-url` (Kannel's default), appended to [`KannelConfig::base_url`].
pub const SENDSMS_PATH: &str = "/cgi-bin/sendsms";

/// The delivery reports we ask Kannel for: all five.
///
/// - 8 (SMSC accepted) tells the outbox the message left Kannel: from then on sending it
///   through another gateway could give the person a second copy.
/// - 16 (SMSC rejected) is final and means no copy was made: fail over at once.
/// - 4 (buffered at the SMSC: the handset is off or out of coverage) says the message is
///   waiting for the phone, which another gateway would reach no sooner.
/// - 1 (delivered) and 2 (failed) are the final answers about the handset.
pub const DLR_MASK: u8 = 31;

const REDACTED: &str = "[redacted]";

// ------------------------------------------------------------------------------------
// Settings
// ------------------------------------------------------------------------------------

/// One Kannel gateway: its smsbox, its `sendsms-user`, the sender and our DLR endpoint.
/// `Debug` shows the secrets as `[REDACTED]` (`secrecy`).
#[derive(Clone, Debug)]
pub struct KannelConfig {
    /// smsbox's HTTP root, for example `http://127.0.0.1:13013` (its `sendsms-port`);
    /// [`SENDSMS_PATH`] is appended.
    pub base_url: String,
    /// The `sendsms-user` group's `username`.
    pub username: String,
    /// The `sendsms-user` group's `password`. Never shown.
    pub password: secrecy::SecretString,
    /// The sender: a registered brandname or a number.
    pub from: String,
    /// Our delivery-report endpoint for this gateway, for example
    /// `https://canhbao.example/api/v1/sms/dlr/kannel`; the reference, the secret and
    /// Kannel's escape codes are added as query parameters.
    pub dlr_url_base: String,
    /// The per-gateway secret that authenticates delivery reports. Never shown.
    pub dlr_secret: secrecy::SecretString,
}

impl KannelConfig {
    /// The shortest DLR secret accepted.
    pub const MIN_SECRET_CHARS: usize = 16;

    /// Every problem with these settings, none if they are usable.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut url = |name: &str, value: &str| {
            if !(value.starts_with("http://") || value.starts_with("https://")) {
                problems.push(format!("{name} {value:?} is not an http(s) URL"));
            } else if value.contains('#') || value.chars().any(char::is_whitespace) {
                problems.push(format!("{name} {value:?} has a fragment or whitespace"));
            }
        };
        url("base_url", &self.base_url);
        url("dlr_url_base", &self.dlr_url_base);
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
        if self.dlr_secret.expose_secret().chars().count() < Self::MIN_SECRET_CHARS {
            problems.push(format!(
                "dlr_secret is shorter than {} characters",
                Self::MIN_SECRET_CHARS
            ));
        }
        problems
    }
}

// ------------------------------------------------------------------------------------
// The sendsms request (pure)
// ------------------------------------------------------------------------------------

/// Kannel's `coding`: 0 for the GSM-7 default alphabet, 2 for UCS-2.
pub fn coding(encoding: Encoding) -> u8 {
    match encoding {
        Encoding::Gsm7 => 0,
        Encoding::Ucs2 => 2,
    }
}

/// A complete sendsms URL. It holds the password, so its `Debug` shows only the endpoint.
#[derive(Clone, PartialEq, Eq)]
pub struct SendsmsUrl(String);

impl SendsmsUrl {
    /// The URL itself, with the password: for the HTTP client only, never for a log.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SendsmsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let endpoint = self.0.split('?').next().unwrap_or_default();
        write!(f, "SendsmsUrl({endpoint}?{REDACTED})")
    }
}

/// The `dlr-url` for one message, as Kannel is to receive it: our endpoint with the
/// reference and the secret, and Kannel's escape codes for what it fills in.
///
/// `status=%d` (the report type: 1, 2, 4, 8 or 16), `ts=%T` (Unix time; `%t` would be a
/// text time), `answer=%A` (the SMSC's reply, `ACK/` or `NACK/...` or an SMPP receipt),
/// `smsc=%i` (Kannel's smsc-id), `msgid=%F` (the SMSC's own message id) and `to=%p` (the
/// recipient).
///
/// Kannel replaces `%x` everywhere in this URL and turns `%%` into `%` (urltrans.c,
/// `urltrans_fill_escape_codes`), so every literal part is percent-encoded and then has its
/// `%` doubled: otherwise a `%C3` in a secret would come back as `UTF-83`.
pub fn dlr_url(config: &KannelConfig, message_ref: &MessageRef) -> String {
    let base = &config.dlr_url_base;
    let mut url = base.replace('%', "%%");
    url.push(if base.contains('?') { '&' } else { '?' });
    url.push_str("ref=");
    url.push_str(&kannel_literal(message_ref.as_str()));
    url.push_str("&secret=");
    url.push_str(&kannel_literal(config.dlr_secret.expose_secret()));
    url.push_str("&status=%d&ts=%T&answer=%A&smsc=%i&msgid=%F&to=%p");
    url
}

/// The sendsms GET URL for one message.
pub fn sendsms_url(config: &KannelConfig, msg: &SmsMessage) -> Result<SendsmsUrl, MessageError> {
    if !is_e164(&msg.to) {
        return Err(MessageError::BadNumber(msg.to.chars().take(32).collect()));
    }
    if msg.text.is_empty() {
        return Err(MessageError::EmptyText);
    }
    if msg.encoding == Encoding::Gsm7 && !crate::text::is_gsm7(&msg.text) {
        return Err(MessageError::NotGsm7);
    }
    let coding = coding(msg.encoding).to_string();
    let mask = DLR_MASK.to_string();
    let dlr = dlr_url(config, &msg.message_ref);
    let params: [(&str, &str); 9] = [
        ("username", &config.username),
        ("password", config.password.expose_secret()),
        ("from", &config.from),
        ("to", &msg.to),
        ("text", &msg.text),
        ("charset", "UTF-8"),
        ("coding", &coding),
        ("dlr-mask", &mask),
        ("dlr-url", &dlr),
    ];
    let mut url = config.base_url.trim_end_matches('/').to_owned();
    url.push_str(SENDSMS_PATH);
    for (i, (name, value)) in params.iter().enumerate() {
        url.push(if i == 0 { '?' } else { '&' });
        url.push_str(name);
        url.push('=');
        percent_encode(value, &mut url);
    }
    Ok(SendsmsUrl(url))
}

/// What RFC 3986 leaves unencoded: letters, digits and `-._~`.
const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// RFC 3986: everything but unreserved characters as `%XX` of its UTF-8 bytes (the
/// `percent-encoding` crate).
pub(crate) fn percent_encode(value: &str, out: &mut String) {
    out.extend(percent_encoding::utf8_percent_encode(value, UNRESERVED));
}

/// A literal query value inside a dlr-url: percent-encoded, then `%` doubled for Kannel.
fn kannel_literal(value: &str) -> String {
    let mut encoded = String::new();
    percent_encode(value, &mut encoded);
    encoded.replace('%', "%%")
}

// ------------------------------------------------------------------------------------
// Kannel's answer (pure)
// ------------------------------------------------------------------------------------

/// Reads smsbox's answer to a sendsms request.
pub fn parse_sendsms_answer(status: u16, body: &str) -> Result<SendOutcome, UnexpectedAnswer> {
    let text = body.trim();
    if (200..300).contains(&status) {
        return match text.split_once(':').map(|(code, _)| code.trim()) {
            Some("0") => Ok(SendOutcome::Accepted),
            Some("3") => Ok(SendOutcome::Queued),
            _ => Err(UnexpectedAnswer {
                status,
                body: text.chars().take(200).collect(),
            }),
        };
    }
    Ok(rejected(status, text, false))
}

// ------------------------------------------------------------------------------------
// Kannel's delivery-report callback (pure)
// ------------------------------------------------------------------------------------

/// Reads a delivery-report callback's query string (with or without its `?`), as made
/// from [`dlr_url`]. The secret is checked first, in constant time; a report that fails
/// it says nothing more about itself.
pub fn parse_dlr_query(query: &str, secret: &str) -> Result<DeliveryReport, DlrError> {
    const KEYS: [&str; 8] = ["ref", "secret", "status", "ts", "answer", "smsc", "msgid", "to"];
    if secret.is_empty() {
        return Err(DlrError::NoSecretConfigured);
    }
    let mut values: [Option<String>; 8] = Default::default();
    let mut duplicate = None;
    for pair in query.strip_prefix('?').unwrap_or(query).split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = form_decode(key);
        if let Some(i) = KEYS.iter().position(|k| *k == key) {
            if values[i].is_some() {
                duplicate.get_or_insert(KEYS[i]);
            }
            values[i] = Some(form_decode(value));
        }
    }
    let [reference, given_secret, status, ts, answer, smsc, msgid, to] = values;
    let given_secret = given_secret.ok_or(DlrError::MissingSecret)?;
    if !same_secret(&given_secret, secret) {
        return Err(DlrError::WrongSecret);
    }
    if let Some(key) = duplicate {
        return Err(DlrError::Duplicate(key));
    }
    let reference = reference.ok_or(DlrError::Missing("ref"))?;
    let message_ref = MessageRef::new(&reference).map_err(|_| DlrError::BadRef(reference))?;
    let status = status.ok_or(DlrError::Missing("status"))?;
    let status = status
        .parse::<u8>()
        .ok()
        .and_then(DlrStatus::from_code)
        .ok_or(DlrError::BadStatus(status))?;
    let at = match ts.filter(|t| !t.is_empty()) {
        None => None,
        Some(t) => Some(
            t.parse::<i64>()
                .ok()
                .and_then(|secs| DateTime::from_timestamp(secs, 0))
                .ok_or(DlrError::BadTime(t))?,
        ),
    };
    let non_empty = |v: Option<String>| v.filter(|v| !v.is_empty());
    Ok(DeliveryReport {
        message_ref,
        status,
        at,
        reason: answer.unwrap_or_default(),
        smsc_message_id: non_empty(msgid),
        smsc: non_empty(smsc),
        to: non_empty(to),
    })
}

// ------------------------------------------------------------------------------------
// Kannel over the HTTP link (I/O)
// ------------------------------------------------------------------------------------

/// One Kannel smsbox.
pub type KannelGateway = HttpGateway<KannelConfig>;

impl Protocol for KannelConfig {
    const NAME: &'static str = "kannel";

    fn problems(&self) -> Vec<String> {
        KannelConfig::problems(self)
    }

    fn endpoint(&self) -> String {
        format!("{}{SENDSMS_PATH}", self.base_url.trim_end_matches('/'))
    }

    fn request(&self, msg: &SmsMessage) -> Result<Request, GatewayError> {
        let url = sendsms_url(self, msg)?;
        Ok(Box::new(move |c: &reqwest::Client| c.get(url.expose())))
    }

    fn read_answer(&self, status: u16, body: &str) -> Result<SendOutcome, UnexpectedAnswer> {
        parse_sendsms_answer(status, body)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::*;
    use crate::link::GatewayLimits;
    use crate::message::RejectKind;

    const SECRET: &str = "0123456789abcdef-secret";

    fn config() -> KannelConfig {
        KannelConfig {
            base_url: "http://127.0.0.1:23013/".to_owned(),
            username: "tester".to_owned(),
            password: "foobar".to_owned().into(),
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

    /// What smsbox does to a dlr-url when a report comes (urltrans_fill_escape_codes), for
    /// the codes we use: `%d %T %A %i %F %p` filled and URL-encoded, `%%` to `%`, any other
    /// `%x` kept.
    fn kannel_fill(pattern: &str, status: u8, answer: &str, msgid: &str) -> String {
        let mut out = String::new();
        let mut chars = pattern.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('d') => out.push_str(&status.to_string()),
                Some('T') => out.push_str("1795862006"),
                Some('A') => percent_encode(answer, &mut out),
                Some('i') => out.push_str("FAKE"),
                Some('F') => percent_encode(msgid, &mut out),
                Some('p') => percent_encode("+84912345678", &mut out),
                Some('%') => out.push('%'),
                Some(other) => {
                    out.push('%');
                    out.push(other);
                }
                None => out.push('%'),
            }
        }
        out
    }

    fn query_of(url: &str) -> &str {
        url.split_once('?').unwrap().1
    }

    #[test]
    fn the_sendsms_url_carries_every_parameter_encoded() {
        let url = sendsms_url(&config(), &message("+84912345678", "Cảnh báo lũ", Encoding::Ucs2)).unwrap();
        assert_eq!(
            url.expose(),
            "http://127.0.0.1:23013/cgi-bin/sendsms?username=tester&password=foobar\
             &from=CANHBAO&to=%2B84912345678&text=C%E1%BA%A3nh%20b%C3%A1o%20l%C5%A9\
             &charset=UTF-8&coding=2&dlr-mask=31&dlr-url=http%3A%2F%2F127.0.0.1%3A23080%2Fdlr\
             %3Fref%3Da1b2%25%253A84912345678%26secret%3D0123456789abcdef-secret\
             %26status%3D%25d%26ts%3D%25T%26answer%3D%25A%26smsc%3D%25i%26msgid%3D%25F%26to%3D%25p"
        );
        let gsm = sendsms_url(
            &config(),
            &message("+84912345678", "Canh bao @ 100%", Encoding::Gsm7),
        )
        .unwrap();
        assert!(gsm.expose().contains("&text=Canh%20bao%20%40%20100%25&"));
        assert!(gsm.expose().contains("&coding=0&"));
    }

    #[test]
    fn the_dlr_url_doubles_every_literal_percent_for_kannel() {
        let mut cfg = config();
        cfg.dlr_url_base = "https://x.example/dlr?gw=k%201".to_owned();
        cfg.dlr_secret = "Zq%C3+/&x=1 ~Lạng sơn".to_owned().into();
        let url = dlr_url(&cfg, &MessageRef::new("r-1").unwrap());
        assert_eq!(
            url,
            "https://x.example/dlr?gw=k%%201&ref=r-1\
             &secret=Zq%%25C3%%2B%%2F%%26x%%3D1%%20~L%%E1%%BA%%A1ng%%20s%%C6%%A1n\
             &status=%d&ts=%T&answer=%A&smsc=%i&msgid=%F&to=%p"
        );
    }

    #[test]
    fn a_report_filled_in_by_kannel_parses_back_to_our_reference_and_secret() {
        for secret in [SECRET, "Zq%C3+/&x=1 ~Lạng sơn", "%d%A%%%F%T....."] {
            let mut cfg = config();
            cfg.dlr_secret = secret.to_owned().into();
            let reference = MessageRef::new("alert-7.v2:84912345678").unwrap();
            let filled = kannel_fill(&dlr_url(&cfg, &reference), 16, "NACK/0x0000000b/Invalid Dest", "");
            let report = parse_dlr_query(query_of(&filled), secret).unwrap();
            assert_eq!(report.message_ref, reference);
            assert_eq!(report.status, DlrStatus::SmscRejected);
            assert_eq!(report.reason, "NACK/0x0000000b/Invalid Dest");
            assert_eq!(report.to.as_deref(), Some("+84912345678"));
            assert_eq!(report.smsc.as_deref(), Some("FAKE"));
            assert_eq!(report.smsc_message_id, None);
        }
    }

    #[test]
    fn kannels_answers_are_read_as_the_transcript_shows() {
        use RejectKind::{Permanent, Transient};
        fn check(status: u16, body: &str, expected: Result<SendOutcome, UnexpectedAnswer>) {
            assert_eq!(parse_sendsms_answer(status, body), expected, "{status} {body:?}");
        }
        let rejected = |status: u16, reason: &str, kind| {
            Ok(SendOutcome::Rejected {
                status,
                reason: reason.to_owned(),
                kind,
            })
        };
        check(202, "0: Accepted for delivery", Ok(SendOutcome::Accepted));
        check(200, "0: Accepted for delivery\n", Ok(SendOutcome::Accepted));
        check(202, "3: Queued for later delivery", Ok(SendOutcome::Queued));
        check(
            403,
            "Authorization failed for sendsms",
            rejected(403, "Authorization failed for sendsms", Permanent),
        );
        check(
            400,
            "Missing receiver number, rejected",
            rejected(400, "Missing receiver number, rejected", Permanent),
        );
        check(
            400,
            "Sender missing and no global set, rejected",
            rejected(400, "Sender missing and no global set, rejected", Permanent),
        );
        check(
            403,
            "Not routable. Do not try again.",
            rejected(403, "Not routable. Do not try again.", Permanent),
        );
        check(
            503,
            "Temporal failure, try again later.",
            rejected(503, "Temporal failure, try again later.", Transient),
        );
        check(
            500,
            "Sending failed.",
            rejected(500, "Sending failed.", Transient),
        );
        check(429, "", rejected(429, "", Transient));
        check(302, "", rejected(302, "", Permanent));
        check(
            202,
            "Sent.",
            Err(UnexpectedAnswer {
                status: 202,
                body: "Sent.".to_owned(),
            }),
        );
    }

    #[test]
    fn the_transcripts_delivery_reports_parse() {
        // Section 1a of kannel-http-transcript.txt, with our names for the parameters.
        let ack = format!(
            "ref=MSG42&secret={SECRET}&status=8&answer=ACK%2F&ts=1795862006&to=%2B15550002222\
             &smsc=FAKE&msgid="
        );
        let report = parse_dlr_query(&ack, SECRET).unwrap();
        assert_eq!(report.status, DlrStatus::SmscAccepted);
        assert!(!report.status.is_final());
        assert_eq!(report.reason, "ACK/");
        assert_eq!(report.at, DateTime::from_timestamp(1_795_862_006, 0));
        assert_eq!(report.smsc_message_id, None);
        let delivered = format!(
            "?ref=MSG42&secret={SECRET}&status=1&answer=&ts=1795862006&to=%2B15550002222\
             &smsc=FAKE&msgid=ff362d8d-033f-4317-bb8c-6295ae2443bb"
        );
        let report = parse_dlr_query(&delivered, SECRET).unwrap();
        assert_eq!(report.status, DlrStatus::Delivered);
        assert!(report.status.is_final());
        assert_eq!(report.message_ref.as_str(), "MSG42");
        assert_eq!(
            report.smsc_message_id.as_deref(),
            Some("ff362d8d-033f-4317-bb8c-6295ae2443bb")
        );
        assert_eq!(report.to.as_deref(), Some("+15550002222"));
    }

    #[test]
    fn bad_delivery_reports_are_refused_and_the_secret_comes_first() {
        fn check(query: &str, expected: DlrError) {
            assert_eq!(parse_dlr_query(query, SECRET), Err(expected), "{query}");
        }
        let s = format!("secret={SECRET}");
        check("ref=a&status=1", DlrError::MissingSecret);
        check("ref=a&status=1&secret=", DlrError::WrongSecret);
        check(
            "ref=a&status=1&secret=0123456789abcdef-secreT",
            DlrError::WrongSecret,
        );
        check("ref=a&status=99&secret=x", DlrError::WrongSecret);
        check(&format!("{s}&status=1"), DlrError::Missing("ref"));
        check(&format!("{s}&ref=a"), DlrError::Missing("status"));
        check(
            &format!("{s}&ref=a&status=3"),
            DlrError::BadStatus("3".to_owned()),
        );
        check(
            &format!("{s}&ref=a&status=%25d"),
            DlrError::BadStatus("%d".to_owned()),
        );
        check(
            &format!("{s}&ref=a+b&status=1"),
            DlrError::BadRef("a b".to_owned()),
        );
        check(
            &format!("{s}&ref=a&status=1&ts=yesterday"),
            DlrError::BadTime("yesterday".to_owned()),
        );
        check(&format!("{s}&ref=a&ref=b&status=1"), DlrError::Duplicate("ref"));
        check(&format!("{s}&{s}&ref=a&status=1"), DlrError::Duplicate("secret"));
        assert_eq!(
            parse_dlr_query(&format!("{s}&ref=a&status=1"), ""),
            Err(DlrError::NoSecretConfigured)
        );
        let ok = parse_dlr_query(&format!("{s}&ref=a&status=2&extra=1"), SECRET).unwrap();
        assert_eq!(
            (ok.status, ok.at, ok.reason.as_str()),
            (DlrStatus::Failed, None, "")
        );
    }

    #[test]
    fn status_codes_round_trip_and_only_kannels_five_exist() {
        for code in 0..=u8::MAX {
            match DlrStatus::from_code(code) {
                Some(status) => assert_eq!(status.code(), code),
                None => assert!(![1, 2, 4, 8, 16].contains(&code)),
            }
        }
    }

    #[test]
    fn messages_that_cannot_be_sent_are_refused_before_any_request() {
        fn check(to: &str, text: &str, encoding: Encoding, expected: MessageError) {
            assert_eq!(
                sendsms_url(&config(), &message(to, text, encoding)),
                Err(expected)
            );
        }
        check(
            "0912345678",
            "x",
            Encoding::Gsm7,
            MessageError::BadNumber("0912345678".to_owned()),
        );
        check(
            "+84 912345678",
            "x",
            Encoding::Gsm7,
            MessageError::BadNumber("+84 912345678".to_owned()),
        );
        check(
            "+0912345678",
            "x",
            Encoding::Gsm7,
            MessageError::BadNumber("+0912345678".to_owned()),
        );
        check(
            "+8491234567890123",
            "x",
            Encoding::Gsm7,
            MessageError::BadNumber("+8491234567890123".to_owned()),
        );
        check("+84912345678", "", Encoding::Ucs2, MessageError::EmptyText);
        check("+84912345678", "Cảnh báo", Encoding::Gsm7, MessageError::NotGsm7);
        assert!(MessageRef::new("").is_err());
        assert!(MessageRef::new(&"x".repeat(65)).is_err());
        assert!(MessageRef::new("a/b").is_err());
        assert!(MessageRef::new(&"x".repeat(64)).is_ok());
    }

    #[test]
    fn settings_report_every_problem_at_once() {
        let bad = KannelConfig {
            base_url: "127.0.0.1:13013?x".to_owned(),
            username: String::new(),
            password: String::new().into(),
            from: " ".to_owned(),
            dlr_url_base: "http://h/dlr#x".to_owned(),
            dlr_secret: "short".to_owned().into(),
        };
        assert_eq!(bad.problems().len(), 7, "{:?}", bad.problems());
        assert!(config().problems().is_empty());
        match KannelGateway::new(bad, GatewayLimits::default()) {
            Err(GatewayError::Config(problems)) => assert_eq!(problems.len(), 7),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let cfg = config();
        let url = sendsms_url(&cfg, &message("+84912345678", "x", Encoding::Gsm7)).unwrap();
        let gateway = KannelGateway::new(cfg.clone(), GatewayLimits::default()).unwrap();
        for shown in [format!("{cfg:?}"), format!("{url:?}"), format!("{gateway:?}")] {
            assert!(!shown.contains("foobar"), "{shown}");
            assert!(!shown.contains(SECRET), "{shown}");
        }
        assert_eq!(
            format!("{url:?}"),
            "SendsmsUrl(http://127.0.0.1:23013/cgi-bin/sendsms?[redacted])"
        );
    }

    #[tokio::test]
    async fn an_unreachable_gateway_is_known_to_have_sent_nothing() {
        // A port that was free a moment ago: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cfg = config();
        cfg.base_url = format!("http://127.0.0.1:{port}");
        let gateway = KannelGateway::new(cfg, GatewayLimits::default()).unwrap();
        let err = gateway
            .send(&message("+84912345678", "x", Encoding::Gsm7))
            .await
            .unwrap_err();
        assert!(matches!(err, GatewayError::Unreachable { .. }), "{err:?}");
        assert!(!err.may_have_sent());
        let chain = format!("{err} / {:?}", std::error::Error::source(&err));
        assert!(!chain.contains("foobar") && !chain.contains(SECRET), "{chain}");
        gateway.close();
        let closed = gateway.send(&message("+84912345678", "x", Encoding::Gsm7)).await;
        assert!(matches!(closed, Err(GatewayError::Closed)));
    }

    #[tokio::test]
    async fn a_gateway_that_never_answers_times_out_as_maybe_sent() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hold = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(socket);
        });
        let mut cfg = config();
        cfg.base_url = format!("http://127.0.0.1:{port}");
        let limits = GatewayLimits {
            timeout: Duration::from_millis(300),
            ..GatewayLimits::default()
        };
        let gateway = KannelGateway::new(cfg, limits).unwrap();
        let err = gateway
            .send(&message("+84912345678", "x", Encoding::Gsm7))
            .await
            .unwrap_err();
        assert!(matches!(err, GatewayError::Timeout { .. }), "{err:?}");
        assert!(err.may_have_sent());
        hold.abort();
    }
}
