//! A generic JSON webhook for SMS providers without a gateway kind of their own: the
//! request is a JSON body template and headers from the settings, filled in per message;
//! the answer is judged by its HTTP status; delivery reports come back as JSON whose status
//! word is found by a JSON pointer and mapped by a table.
//!
//! Templates are filled in by walking the JSON tree and replacing placeholders inside
//! string values only, in one pass: the message text can never break the JSON, and a
//! placeholder written in the text (`{{ref}}`) stays text. The placeholders are those of
//! [`Placeholder`]; any other `{{name}}` is a settings problem.
//!
//! Secrets (header values, which hold API keys; literal strings of the body template; the
//! URL's query; the DLR secret) never appear in `Debug` output, in errors or in logs.

use secrecy::ExposeSecret as _;
use std::fmt;

use reqwest::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use serde_json::Value;

use crate::callback::{DeliveryReport, DlrError, DlrStatus};
use crate::jasmin::{Fields, authenticate_callback, callback_url, check_message, check_secret, check_url};
use crate::link::{GatewayError, HttpGateway, Protocol, Request};
use crate::message::{MessageError, MessageRef, SendOutcome, SmsMessage, UnexpectedAnswer};

const REDACTED: &str = "[redacted]";

// ------------------------------------------------------------------------------------
// Settings
// ------------------------------------------------------------------------------------

/// The HTTP method of the send request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookMethod {
    Post,
    Put,
}

impl WebhookMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Post => "POST",
            Self::Put => "PUT",
        }
    }

    fn to_reqwest(self) -> reqwest::Method {
        match self {
            Self::Post => reqwest::Method::POST,
            Self::Put => reqwest::Method::PUT,
        }
    }
}

/// What a template can say, written `{{name}}` inside a JSON string value or a header
/// value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder {
    /// `{{to}}`: the E.164 number, with its `+`.
    To,
    /// `{{to_digits}}`: the number without its `+`.
    ToDigits,
    /// `{{from}}`: [`WebhookConfig::from`].
    From,
    /// `{{text}}`: the message text.
    Text,
    /// `{{ref}}`: our message reference.
    Ref,
    /// `{{dlr_url}}`: our delivery-report URL for this message, with the reference and the
    /// secret.
    DlrUrl,
    /// `{{encoding}}`: `UCS-2` or `GSM-7`.
    Encoding,
}

impl Placeholder {
    pub const ALL: [Self; 7] = [
        Self::To,
        Self::ToDigits,
        Self::From,
        Self::Text,
        Self::Ref,
        Self::DlrUrl,
        Self::Encoding,
    ];

    /// The name between the braces.
    pub fn name(self) -> &'static str {
        match self {
            Self::To => "to",
            Self::ToDigits => "to_digits",
            Self::From => "from",
            Self::Text => "text",
            Self::Ref => "ref",
            Self::DlrUrl => "dlr_url",
            Self::Encoding => "encoding",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// One webhook provider.
#[derive(Clone)]
pub struct WebhookConfig {
    /// Where to send, for example `https://sms.example/v1/messages`. Its query, if any, is
    /// never shown (it may hold a key).
    pub url: String,
    pub method: WebhookMethod,
    /// Request headers, `(name, value)`; values may hold placeholders. Values are never
    /// shown (they hold API keys). `Content-Type: application/json` is sent unless one is
    /// given here.
    pub headers: Vec<(String, String)>,
    /// The body template: any JSON, whose string values may hold placeholders. Its literal
    /// strings are never shown (they may hold keys).
    pub body: Value,
    /// The sender, for `{{from}}`.
    pub from: String,
    /// Our delivery-report endpoint for this gateway; `{{dlr_url}}` is this with our
    /// reference and the secret as query parameters.
    pub dlr_url_base: String,
    /// The per-gateway secret that authenticates delivery reports. Never shown.
    pub dlr_secret: secrecy::SecretString,
    /// A JSON pointer (RFC 6901) to the status in a delivery report's JSON body;
    /// [`WebhookConfig::DEFAULT_STATUS_POINTER`] by default.
    pub status_pointer: String,
    /// The provider's status words (exact, case-sensitive) and what they mean.
    pub status_map: Vec<(String, DlrStatus)>,
    /// The HTTP statuses that mean the provider took the message; empty means every 2xx.
    pub accepted_statuses: Vec<u16>,
}

impl WebhookConfig {
    pub const DEFAULT_STATUS_POINTER: &'static str = "/status";

    /// A POST of `body` to `url`, with the defaults: no extra headers, no sender, the
    /// status at `/status`, an empty status map, every 2xx accepted. The DLR settings are
    /// left empty for the caller to fill.
    pub fn new(url: impl Into<String>, body: Value) -> Self {
        Self {
            url: url.into(),
            method: WebhookMethod::Post,
            headers: Vec::new(),
            body,
            from: String::new(),
            dlr_url_base: String::new(),
            dlr_secret: String::new().into(),
            status_pointer: Self::DEFAULT_STATUS_POINTER.to_owned(),
            status_map: Vec::new(),
            accepted_statuses: Vec::new(),
        }
    }

    /// Every problem with these settings, none if they are usable.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        check_url(&mut problems, "url", &self.url);
        check_url(&mut problems, "dlr_url_base", &self.dlr_url_base);
        check_secret(&mut problems, self.dlr_secret.expose_secret());

        let mut used = Vec::new();
        let mut unknown = Vec::new();
        let mut note = |template: &str| {
            for segment in segments(template) {
                if let Segment::Field(name) = segment {
                    match Placeholder::from_name(name) {
                        Some(p) => used.push(p),
                        None => unknown.push(name.to_owned()),
                    }
                }
            }
        };
        each_string(&self.body, &mut note);
        for (name, value) in &self.headers {
            note(value);
            if HeaderName::from_bytes(name.as_bytes()).is_err() {
                problems.push(format!("header name {name:?} is not a valid HTTP header name"));
            } else if HeaderValue::from_str(value).is_err() {
                problems.push(format!(
                    "header {name:?} has a value that is not a valid HTTP header value"
                ));
            }
        }
        for name in unknown {
            let known: Vec<_> = Placeholder::ALL.iter().map(|p| p.name()).collect();
            problems.push(format!(
                "placeholder {{{{{name}}}}} is unknown (known: {})",
                known.join(", ")
            ));
        }
        if !used.contains(&Placeholder::Text) {
            problems.push("the body and headers never use {{text}}".to_owned());
        }
        if !used.contains(&Placeholder::To) && !used.contains(&Placeholder::ToDigits) {
            problems.push("the body and headers never use {{to}} or {{to_digits}}".to_owned());
        }
        if used.contains(&Placeholder::From) && self.from.trim().is_empty() {
            problems.push("{{from}} is used but from (the sender) is empty".to_owned());
        }

        if !(self.status_pointer.is_empty() || self.status_pointer.starts_with('/')) {
            problems.push(format!(
                "status_pointer {:?} is not a JSON pointer (empty or starting with /)",
                self.status_pointer
            ));
        }
        if self.status_map.is_empty() {
            problems.push("status_map is empty: no delivery report could be read".to_owned());
        }
        for (i, (word, _)) in self.status_map.iter().enumerate() {
            if self.status_map[..i].iter().any(|(w, _)| w == word) {
                problems.push(format!("status_map has {word:?} twice"));
            }
        }
        for status in &self.accepted_statuses {
            if !(200..300).contains(status) {
                problems.push(format!("accepted status {status} is not a 2xx"));
            }
        }
        problems
    }

    /// The URL without its query: what names this gateway in errors and logs.
    pub fn endpoint(&self) -> &str {
        self.url.split(['?', '#']).next().unwrap_or_default()
    }
}

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = if self.url.contains('?') {
            format!("{}?{REDACTED}", self.endpoint())
        } else {
            self.url.clone()
        };
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(name, _)| (name.as_str(), REDACTED))
            .collect();
        f.debug_struct("WebhookConfig")
            .field("url", &url)
            .field("method", &self.method)
            .field("headers", &headers)
            .field("body", &redacted_template(&self.body))
            .field("from", &self.from)
            .field("dlr_url_base", &self.dlr_url_base)
            .field("dlr_secret", &REDACTED)
            .field("status_pointer", &self.status_pointer)
            .field("status_map", &self.status_map)
            .field("accepted_statuses", &self.accepted_statuses)
            .finish()
    }
}

/// The template with every string that holds literal text replaced by `[redacted]`;
/// strings made only of placeholders are kept, so the shape stays readable.
fn redacted_template(template: &Value) -> Value {
    match template {
        Value::String(s) => {
            let only_placeholders = segments(s)
                .iter()
                .all(|segment| matches!(segment, Segment::Field(_)));
            if only_placeholders {
                template.clone()
            } else {
                Value::String(REDACTED.to_owned())
            }
        }
        Value::Array(items) => Value::Array(items.iter().map(redacted_template).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), redacted_template(v)))
                .collect(),
        ),
        Value::Null | Value::Bool(_) | Value::Number(_) => template.clone(),
    }
}

// ------------------------------------------------------------------------------------
// Templates (pure)
// ------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Segment<'a> {
    Literal(&'a str),
    /// The name between `{{` and `}}`, known or not.
    Field(&'a str),
}

/// A template string cut into literal text and `{{name}}` fields. A `{{` with no `}}`
/// after it is literal text.
fn segments(template: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            break;
        };
        if start > 0 {
            out.push(Segment::Literal(&rest[..start]));
        }
        out.push(Segment::Field(&after[..end]));
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        out.push(Segment::Literal(rest));
    }
    out
}

fn each_string(value: &Value, f: &mut impl FnMut(&str)) {
    match value {
        Value::String(s) => f(s),
        Value::Array(items) => items.iter().for_each(|v| each_string(v, f)),
        Value::Object(map) => map.values().for_each(|v| each_string(v, f)),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// The values the placeholders stand for, for one message.
struct Values<'a> {
    msg: &'a SmsMessage,
    from: &'a str,
    dlr_url: String,
}

impl Values<'_> {
    fn get(&self, placeholder: Placeholder) -> &str {
        match placeholder {
            Placeholder::To => &self.msg.to,
            Placeholder::ToDigits => self.msg.to.trim_start_matches('+'),
            Placeholder::From => self.from,
            Placeholder::Text => &self.msg.text,
            Placeholder::Ref => self.msg.message_ref.as_str(),
            Placeholder::DlrUrl => &self.dlr_url,
            Placeholder::Encoding => self.msg.encoding.label(),
        }
    }

    /// One pass over `template`: what a value holds is never read again as a template.
    /// An unknown `{{name}}` (which [`WebhookConfig::problems`] reports) stays as written.
    fn fill(&self, template: &str) -> String {
        let mut out = String::with_capacity(template.len());
        for segment in segments(template) {
            match segment {
                Segment::Literal(text) => out.push_str(text),
                Segment::Field(name) => match Placeholder::from_name(name) {
                    Some(p) => out.push_str(self.get(p)),
                    None => {
                        out.push_str("{{");
                        out.push_str(name);
                        out.push_str("}}");
                    }
                },
            }
        }
        out
    }

    fn fill_json(&self, template: &Value) -> Value {
        match template {
            Value::String(s) => Value::String(self.fill(s)),
            Value::Array(items) => Value::Array(items.iter().map(|v| self.fill_json(v)).collect()),
            Value::Object(map) => {
                Value::Object(map.iter().map(|(k, v)| (k.clone(), self.fill_json(v))).collect())
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => template.clone(),
        }
    }
}

/// The `{{dlr_url}}` for one message.
pub fn webhook_dlr_url(config: &WebhookConfig, message_ref: &MessageRef) -> String {
    callback_url(
        &config.dlr_url_base,
        message_ref,
        config.dlr_secret.expose_secret(),
    )
}

/// Why a webhook request cannot be built (nothing was sent).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookRequestError {
    #[error(transparent)]
    Message(#[from] MessageError),
    /// A header whose value, once filled in, is not a valid header value (a placeholder
    /// such as `{{text}}` brought in a line break).
    #[error("header {name:?} is not a valid HTTP header once filled in")]
    BadHeader { name: String },
}

impl From<WebhookRequestError> for GatewayError {
    fn from(e: WebhookRequestError) -> Self {
        match e {
            WebhookRequestError::Message(e) => GatewayError::Message(e),
            bad @ WebhookRequestError::BadHeader { .. } => GatewayError::Config(vec![bad.to_string()]),
        }
    }
}

/// One filled-in webhook request. Its header values and body (keys, the number, the text)
/// are not shown by `Debug`.
#[derive(Clone)]
pub struct WebhookRequest {
    method: WebhookMethod,
    url: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: String,
}

impl WebhookRequest {
    pub fn method(&self) -> WebhookMethod {
        self.method
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Every header, `Content-Type` included; values are marked sensitive.
    pub fn headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.headers
    }

    /// The JSON body.
    pub fn body(&self) -> &str {
        &self.body
    }
}

impl fmt::Debug for WebhookRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        let endpoint = self.url.split(['?', '#']).next().unwrap_or_default();
        f.debug_struct("WebhookRequest")
            .field("method", &self.method)
            .field("endpoint", &endpoint)
            .field("headers", &names)
            .field("body", &REDACTED)
            .finish()
    }
}

/// Fills in the body template and the headers for one message.
pub fn webhook_request(
    config: &WebhookConfig,
    msg: &SmsMessage,
) -> Result<WebhookRequest, WebhookRequestError> {
    check_message(msg)?;
    let values = Values {
        msg,
        from: &config.from,
        dlr_url: webhook_dlr_url(config, &msg.message_ref),
    };
    let mut headers = Vec::with_capacity(config.headers.len() + 1);
    for (name, template) in &config.headers {
        let bad = || WebhookRequestError::BadHeader { name: name.clone() };
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?;
        let mut value = HeaderValue::from_str(&values.fill(template)).map_err(|_| bad())?;
        value.set_sensitive(true);
        headers.push((name, value));
    }
    if !headers.iter().any(|(name, _)| name == CONTENT_TYPE) {
        headers.insert(0, (CONTENT_TYPE, HeaderValue::from_static("application/json")));
    }
    Ok(WebhookRequest {
        method: config.method,
        url: config.url.clone(),
        headers,
        body: values.fill_json(&config.body).to_string(),
    })
}

// ------------------------------------------------------------------------------------
// The provider's answer (pure)
// ------------------------------------------------------------------------------------

/// Reads the provider's answer by its status: one of `accepted` (every 2xx when empty) is
/// [`SendOutcome::Accepted`]; 5xx, 408 and 429 a transient rejection; any other non-2xx a
/// permanent one (the reason is the first 200 characters of the body). A 2xx that is not
/// among `accepted` is unexpected: the provider may have taken the message.
pub fn parse_webhook_answer(
    status: u16,
    body: &str,
    accepted: &[u16],
) -> Result<SendOutcome, UnexpectedAnswer> {
    let is_2xx = (200..300).contains(&status);
    let text = body.trim();
    if accepted.contains(&status) || (accepted.is_empty() && is_2xx) {
        return Ok(SendOutcome::Accepted);
    }
    if is_2xx {
        return Err(UnexpectedAnswer {
            status,
            body: text.chars().take(200).collect(),
        });
    }
    Ok(crate::message::rejected(status, text, false))
}

// ------------------------------------------------------------------------------------
// Delivery reports (pure)
// ------------------------------------------------------------------------------------

/// Reads one delivery-report callback: the secret and our reference from the callback
/// URL's query (the secret first, in constant time), the status from the JSON body at
/// [`WebhookConfig::status_pointer`] (a string, or a number read as its JSON text),
/// mapped by [`WebhookConfig::status_map`] (exact, case-sensitive). The status word is the
/// report's `reason`.
pub fn parse_webhook_dlr(
    query: &str,
    body: &str,
    config: &WebhookConfig,
) -> Result<DeliveryReport, DlrError> {
    let message_ref = authenticate_callback(&Fields::query(query), config.dlr_secret.expose_secret())?;
    let json: Value = serde_json::from_str(body).map_err(|e| DlrError::NotJson(e.to_string()))?;
    let word = match json.pointer(&config.status_pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(DlrError::NoStatusAt(config.status_pointer.clone())),
    };
    let status = config
        .status_map
        .iter()
        .find(|(w, _)| *w == word)
        .map(|(_, status)| *status)
        .ok_or_else(|| DlrError::UnknownStatus(word.chars().take(64).collect()))?;
    Ok(DeliveryReport {
        message_ref,
        status,
        at: None,
        reason: word,
        smsc_message_id: None,
        smsc: None,
        to: None,
    })
}

// ------------------------------------------------------------------------------------
// The gateway (I/O)
// ------------------------------------------------------------------------------------

/// One webhook provider.
pub type WebhookGateway = HttpGateway<WebhookConfig>;

impl Protocol for WebhookConfig {
    const NAME: &'static str = "webhook";

    fn problems(&self) -> Vec<String> {
        WebhookConfig::problems(self)
    }

    fn endpoint(&self) -> String {
        WebhookConfig::endpoint(self).to_owned()
    }

    fn request(&self, msg: &SmsMessage) -> Result<Request, GatewayError> {
        let request = webhook_request(self, msg)?;
        Ok(Box::new(move |c: &reqwest::Client| {
            let mut builder = c.request(request.method().to_reqwest(), request.url());
            for (name, value) in request.headers() {
                builder = builder.header(name, value);
            }
            builder.body(request.body().to_owned())
        }))
    }

    fn read_answer(&self, status: u16, body: &str) -> Result<SendOutcome, UnexpectedAnswer> {
        parse_webhook_answer(status, body, &self.accepted_statuses)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;
    use crate::kannel::Encoding;

    const SECRET: &str = "0123456789abcdef-secret";
    const KEY: &str = "sk_live_abcdef123456";

    fn config() -> WebhookConfig {
        WebhookConfig {
            headers: vec![
                ("Authorization".to_owned(), format!("Bearer {KEY}")),
                ("X-Request-Id".to_owned(), "canhbao-{{ref}}".to_owned()),
            ],
            from: "CANHBAO".to_owned(),
            dlr_url_base: "https://canhbao.example/api/v1/sms/dlr/hook".to_owned(),
            dlr_secret: SECRET.to_owned().into(),
            status_map: vec![
                ("delivered".to_owned(), DlrStatus::Delivered),
                ("failed".to_owned(), DlrStatus::Failed),
                ("sent".to_owned(), DlrStatus::SmscAccepted),
                ("1".to_owned(), DlrStatus::Delivered),
            ],
            ..WebhookConfig::new(
                "https://sms.example/v1/messages?api_key=querykey",
                json!({
                    "api_key": "bodykey",
                    "message": {"to": "{{to}}", "msisdn": "{{to_digits}}", "sender": "{{from}}",
                                "body": "{{text}}", "unicode": "{{encoding}}"},
                    "reference": "canhbao:{{ref}}",
                    "callback": {"url": "{{dlr_url}}", "tries": 3, "on": true, "none": null},
                    "tags": ["alert", "{{ref}}"]
                }),
            )
        }
    }

    fn message(text: &str, encoding: Encoding) -> SmsMessage {
        SmsMessage {
            to: "+84912345678".to_owned(),
            text: text.to_owned(),
            encoding,
            message_ref: MessageRef::new("a1b2:84912345678").unwrap(),
        }
    }

    fn header<'a>(request: &'a WebhookRequest, name: &str) -> Option<&'a str> {
        request
            .headers()
            .iter()
            .find(|(n, _)| n.as_str() == name)
            .map(|(_, v)| v.to_str().unwrap())
    }

    #[test]
    fn the_template_is_filled_in_inside_string_values_only() {
        let text = "Cảnh báo lũ \"cấp 3\"\n& {x}=1+1 \\ </script> {{ref}} {{to}}";
        let request = webhook_request(&config(), &message(text, Encoding::Ucs2)).unwrap();
        let body: Value = serde_json::from_str(request.body()).unwrap();
        assert_eq!(
            body,
            json!({
                "api_key": "bodykey",
                "message": {"to": "+84912345678", "msisdn": "84912345678", "sender": "CANHBAO",
                            "body": text, "unicode": "UCS-2"},
                "reference": "canhbao:a1b2:84912345678",
                "callback": {"url": "https://canhbao.example/api/v1/sms/dlr/hook?ref=a1b2%3A84912345678\
                                     &secret=0123456789abcdef-secret",
                             "tries": 3, "on": true, "none": null},
                "tags": ["alert", "a1b2:84912345678"]
            })
        );
        assert_eq!(request.method(), WebhookMethod::Post);
        assert_eq!(request.url(), "https://sms.example/v1/messages?api_key=querykey");
        assert_eq!(header(&request, "content-type"), Some("application/json"));
        assert_eq!(
            header(&request, "authorization"),
            Some(format!("Bearer {KEY}").as_str())
        );
        assert_eq!(header(&request, "x-request-id"), Some("canhbao-a1b2:84912345678"));
        let gsm = webhook_request(&config(), &message("Canh bao", Encoding::Gsm7)).unwrap();
        let body: Value = serde_json::from_str(gsm.body()).unwrap();
        assert_eq!(body["message"]["unicode"], "GSM-7");
    }

    #[test]
    fn placeholders_are_cut_as_written() {
        use Segment::{Field, Literal};
        fn check(template: &str, expected: &[Segment<'_>]) {
            assert_eq!(segments(template), expected, "{template:?}");
        }
        check("", &[]);
        check("plain", &[Literal("plain")]);
        check("{{to}}", &[Field("to")]);
        check(
            "a{{to}}b{{text}}",
            &[Literal("a"), Field("to"), Literal("b"), Field("text")],
        );
        check("{{to}}{{to}}", &[Field("to"), Field("to")]);
        check("open {{ only", &[Literal("open {{ only")]);
        check("{{ to }}", &[Field(" to ")]);
        check("}}{{", &[Literal("}}{{")]);
    }

    #[test]
    fn settings_report_every_problem_at_once() {
        let bad = WebhookConfig {
            url: "ftp://sms.example".to_owned(),
            headers: vec![
                ("Bad Name".to_owned(), "x".to_owned()),
                ("X-Ok".to_owned(), "line\nbreak".to_owned()),
                ("X-Typo".to_owned(), "{{too}}".to_owned()),
            ],
            body: json!({"msg": "{{txt}}", "from": "{{from}}"}),
            dlr_url_base: "/dlr".to_owned(),
            dlr_secret: "short".to_owned().into(),
            status_pointer: "status".to_owned(),
            status_map: Vec::new(),
            accepted_statuses: vec![200, 404],
            ..config()
        };
        let problems = bad.problems();
        let expected = [
            "url \"ftp://sms.example\" is not an http(s) URL",
            "dlr_url_base \"/dlr\" is not an http(s) URL",
            "dlr_secret is shorter than 16 characters",
            "header name \"Bad Name\" is not a valid HTTP header name",
            "header \"X-Ok\" has a value that is not a valid HTTP header value",
            "placeholder {{txt}} is unknown (known: to, to_digits, from, text, ref, dlr_url, encoding)",
            "placeholder {{too}} is unknown (known: to, to_digits, from, text, ref, dlr_url, encoding)",
            "the body and headers never use {{text}}",
            "the body and headers never use {{to}} or {{to_digits}}",
            "status_pointer \"status\" is not a JSON pointer (empty or starting with /)",
            "status_map is empty: no delivery report could be read",
            "accepted status 404 is not a 2xx",
        ];
        assert_eq!(problems, expected);
        let mut no_sender = config();
        no_sender.from = String::new();
        no_sender
            .status_map
            .push(("sent".to_owned(), DlrStatus::Buffered));
        assert_eq!(
            no_sender.problems(),
            [
                "{{from}} is used but from (the sender) is empty",
                "status_map has \"sent\" twice"
            ]
        );
        assert!(config().problems().is_empty(), "{:?}", config().problems());
        match WebhookGateway::new(bad, crate::link::GatewayLimits::default()) {
            Err(GatewayError::Config(p)) => assert_eq!(p.len(), expected.len()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_header_broken_by_the_text_is_refused_before_sending() {
        let mut cfg = config();
        cfg.headers.push(("X-Preview".to_owned(), "{{text}}".to_owned()));
        assert_eq!(
            webhook_request(&cfg, &message("two\nlines", Encoding::Gsm7)).unwrap_err(),
            WebhookRequestError::BadHeader {
                name: "X-Preview".to_owned()
            }
        );
        let err = GatewayError::from(WebhookRequestError::BadHeader {
            name: "X-Preview".to_owned(),
        });
        assert!(!err.may_have_sent());
        assert_eq!(
            webhook_request(&cfg, &message("", Encoding::Gsm7)).unwrap_err(),
            WebhookRequestError::Message(MessageError::EmptyText)
        );
    }

    #[test]
    fn a_content_type_given_in_the_settings_is_the_only_one() {
        let mut cfg = config();
        cfg.headers
            .push(("Content-Type".to_owned(), "application/vnd.sms+json".to_owned()));
        cfg.method = WebhookMethod::Put;
        let request = webhook_request(&cfg, &message("x", Encoding::Gsm7)).unwrap();
        let types: Vec<_> = request
            .headers()
            .iter()
            .filter(|(n, _)| *n == CONTENT_TYPE)
            .collect();
        assert_eq!(types.len(), 1);
        assert_eq!(header(&request, "content-type"), Some("application/vnd.sms+json"));
        assert_eq!(request.method().as_str(), "PUT");
    }

    #[test]
    fn answers_are_read_by_status() {
        use crate::message::RejectKind::{Permanent, Transient};
        fn check(status: u16, accepted: &[u16], expected: Result<SendOutcome, UnexpectedAnswer>) {
            assert_eq!(
                parse_webhook_answer(status, " {\"error\":\"x\"} ", accepted),
                expected,
                "{status} {accepted:?}"
            );
        }
        let rejected = |status, kind| {
            Ok(SendOutcome::Rejected {
                status,
                reason: "{\"error\":\"x\"}".to_owned(),
                kind,
            })
        };
        check(200, &[], Ok(SendOutcome::Accepted));
        check(202, &[], Ok(SendOutcome::Accepted));
        check(204, &[], Ok(SendOutcome::Accepted));
        check(202, &[202], Ok(SendOutcome::Accepted));
        check(
            200,
            &[202],
            Err(UnexpectedAnswer {
                status: 200,
                body: "{\"error\":\"x\"}".to_owned(),
            }),
        );
        check(400, &[], rejected(400, Permanent));
        check(401, &[], rejected(401, Permanent));
        check(422, &[], rejected(422, Permanent));
        check(301, &[], rejected(301, Permanent));
        check(408, &[], rejected(408, Transient));
        check(429, &[], rejected(429, Transient));
        check(500, &[], rejected(500, Transient));
        check(503, &[], rejected(503, Transient));
        match parse_webhook_answer(400, &"é".repeat(300), &[]) {
            Ok(SendOutcome::Rejected { reason, .. }) => assert_eq!(reason.chars().count(), 200),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn delivery_reports_are_read_through_the_pointer_and_the_map() {
        let query = format!("ref=a1b2%3A84912345678&secret={SECRET}");
        let mut cfg = config();
        let check = |cfg: &WebhookConfig, body: &str, expected: Result<DlrStatus, DlrError>| {
            let got = parse_webhook_dlr(&query, body, cfg).map(|r| {
                assert_eq!(r.message_ref.as_str(), "a1b2:84912345678");
                r.status
            });
            assert_eq!(got, expected, "{body}");
        };
        check(&cfg, r#"{"status":"delivered"}"#, Ok(DlrStatus::Delivered));
        check(
            &cfg,
            r#"{"id":"x","status":"failed","extra":[1]}"#,
            Ok(DlrStatus::Failed),
        );
        check(&cfg, r#"{"status":"sent"}"#, Ok(DlrStatus::SmscAccepted));
        check(&cfg, r#"{"status":1}"#, Ok(DlrStatus::Delivered));
        check(
            &cfg,
            r#"{"status":"Delivered"}"#,
            Err(DlrError::UnknownStatus("Delivered".to_owned())),
        );
        check(
            &cfg,
            r#"{"status":"queued"}"#,
            Err(DlrError::UnknownStatus("queued".to_owned())),
        );
        check(
            &cfg,
            r#"{"state":"delivered"}"#,
            Err(DlrError::NoStatusAt("/status".to_owned())),
        );
        check(
            &cfg,
            r#"{"status":null}"#,
            Err(DlrError::NoStatusAt("/status".to_owned())),
        );
        check(
            &cfg,
            r#"{"status":{"code":"delivered"}}"#,
            Err(DlrError::NoStatusAt("/status".to_owned())),
        );
        check(
            &cfg,
            r#"["delivered"]"#,
            Err(DlrError::NoStatusAt("/status".to_owned())),
        );
        assert!(matches!(
            parse_webhook_dlr(&query, "status=delivered", &cfg),
            Err(DlrError::NotJson(_))
        ));
        assert!(matches!(
            parse_webhook_dlr(&query, "", &cfg),
            Err(DlrError::NotJson(_))
        ));
        cfg.status_pointer = "/data/0/dlr~1state".to_owned();
        check(
            &cfg,
            r#"{"data":[{"dlr/state":"delivered"}]}"#,
            Ok(DlrStatus::Delivered),
        );
        let report = parse_webhook_dlr(&query, r#"{"data":[{"dlr/state":"failed"}]}"#, &cfg).unwrap();
        assert_eq!(report.reason, "failed");
    }

    #[test]
    fn reports_without_the_right_secret_say_nothing_more() {
        let cfg = config();
        let body = r#"{"status":"delivered"}"#;
        let check = |query: &str, body: &str, expected: DlrError| {
            assert_eq!(parse_webhook_dlr(query, body, &cfg), Err(expected), "{query}");
        };
        check("ref=a", body, DlrError::MissingSecret);
        check("ref=a&secret=wrong", "not json", DlrError::WrongSecret);
        check(
            &format!("ref=a&secret={SECRET}&secret={SECRET}"),
            body,
            DlrError::Duplicate("secret"),
        );
        check(
            &format!("ref=a&ref=b&secret={SECRET}"),
            body,
            DlrError::Duplicate("ref"),
        );
        check(&format!("secret={SECRET}"), body, DlrError::Missing("ref"));
        check(
            &format!("ref=a%2Fb&secret={SECRET}"),
            body,
            DlrError::BadRef("a/b".to_owned()),
        );
        let mut unset = config();
        unset.dlr_secret = String::new().into();
        assert_eq!(
            parse_webhook_dlr(&format!("ref=a&secret={SECRET}"), body, &unset),
            Err(DlrError::NoSecretConfigured)
        );
    }

    #[test]
    fn keys_and_secrets_never_show_in_debug_output() {
        let cfg = config();
        let request = webhook_request(&cfg, &message("Cảnh báo", Encoding::Ucs2)).unwrap();
        let gateway = WebhookGateway::new(cfg.clone(), crate::link::GatewayLimits::default()).unwrap();
        for shown in [format!("{cfg:?}"), format!("{request:?}"), format!("{gateway:?}")] {
            for secret in [KEY, SECRET, "bodykey", "querykey", "84912345678", "Cảnh"] {
                assert!(!shown.contains(secret), "{secret} in {shown}");
            }
            assert!(shown.contains("sms.example/v1/messages"), "{shown}");
        }
        assert!(format!("{cfg:?}").contains("{{text}}"));
        assert_eq!(cfg.endpoint(), "https://sms.example/v1/messages");
    }
}
