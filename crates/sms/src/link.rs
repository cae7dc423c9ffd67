//! The HTTP link to a gateway, whatever its protocol: one `reqwest` client per gateway,
//! requests in flight capped by a semaphore, a rate limit (`governor`: messages a second,
//! with a burst) and a timeout; the answer read with a size cap; and the same log line for
//! every kind. A gateway kind is a [`Protocol`]: how to build its request and read its
//! answer.

use std::fmt;
use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::message::{MessageError, MessageRef, SendOutcome, SmsMessage, UnexpectedAnswer};

/// Most bytes of a gateway's answer that are read; Kannel's are under 50.
const MAX_ANSWER_BYTES: usize = 4096;

/// How hard one gateway may be driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewayLimits {
    /// Messages a second, over time.
    pub per_second: NonZeroU32,
    /// Messages that may go at once after a quiet spell.
    pub burst: NonZeroU32,
    /// Requests in flight at once.
    pub max_in_flight: NonZeroUsize,
    /// For one whole request (connect, send, answer).
    pub timeout: Duration,
    /// For the connection alone.
    pub connect_timeout: Duration,
}

impl Default for GatewayLimits {
    fn default() -> Self {
        Self {
            per_second: NonZeroU32::MIN.saturating_add(9),
            burst: NonZeroU32::MIN.saturating_add(9),
            max_in_flight: NonZeroUsize::MIN.saturating_add(3),
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
        }
    }
}

/// Why a send did not get an answer from a gateway (any kind: Kannel, Jasmin, webhook).
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("invalid gateway settings: {}", .0.join("; "))]
    Config(Vec<String>),
    #[error("the http client could not be built")]
    Client(#[source] reqwest::Error),
    #[error("the message cannot be sent")]
    Message(#[from] MessageError),
    #[error("the gateway is closed")]
    Closed,
    #[error("the send was called off before anything left: {0}")]
    CalledOff(String),
    #[error("the gateway at {endpoint} cannot be reached")]
    Unreachable {
        endpoint: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the gateway at {endpoint} did not answer within {timeout:?}")]
    Timeout { endpoint: String, timeout: Duration },
    #[error("the request to the gateway at {endpoint} failed")]
    Transport {
        endpoint: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the gateway at {endpoint} gave an answer that cannot be read")]
    Unexpected {
        endpoint: String,
        #[source]
        source: UnexpectedAnswer,
    },
}

impl GatewayError {
    /// Whether the gateway may have taken the message although we have no answer saying so.
    /// Sending it again (here or elsewhere) may then give the person a second copy: this
    /// is the at-least-once edge, and the only one.
    pub fn may_have_sent(&self) -> bool {
        match self {
            Self::Config(_)
            | Self::Client(_)
            | Self::Message(_)
            | Self::Closed
            | Self::CalledOff(_)
            | Self::Unreachable { .. } => false,
            Self::Timeout { .. } | Self::Transport { .. } | Self::Unexpected { .. } => true,
        }
    }
}

/// The HTTP side every gateway kind shares: a client that follows no redirects (they
/// would carry credentials elsewhere) and takes no proxy from the environment, a
/// concurrency cap and a rate limit.
pub struct HttpLink {
    endpoint: String,
    timeout: Duration,
    client: reqwest::Client,
    in_flight: Semaphore,
    /// The gateway's rate (`governor`): `per_second`, with `burst` saved up.
    rate: governor::DefaultDirectRateLimiter,
}

impl HttpLink {
    /// `endpoint` names the gateway in errors and logs; it must hold no secret.
    pub fn new(endpoint: String, limits: GatewayLimits) -> Result<Self, GatewayError> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(limits.timeout)
            .connect_timeout(limits.connect_timeout)
            .pool_max_idle_per_host(limits.max_in_flight.get())
            .build()
            .map_err(|e| GatewayError::Client(e.without_url()))?;
        Ok(Self {
            endpoint,
            timeout: limits.timeout,
            client,
            in_flight: Semaphore::new(limits.max_in_flight.get()),
            rate: governor::RateLimiter::direct(
                governor::Quota::per_second(limits.per_second).allow_burst(limits.burst),
            ),
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Refuses every later request with [`GatewayError::Closed`] (nothing sent).
    pub fn close(&self) {
        self.in_flight.close();
    }

    /// Sends `request` (built from [`HttpLink::client`]) once a slot is free and the rate
    /// limit allows, and reads the status and at most 4 KiB of the answer. `ready` runs
    /// just before the request leaves (the outbox's `sending` mark); if it fails, nothing
    /// is sent.
    pub async fn exchange(
        &self,
        request: impl FnOnce(&reqwest::Client) -> reqwest::RequestBuilder,
        ready: impl Future<Output = Result<(), String>>,
    ) -> Result<(u16, String), GatewayError> {
        let _permit = self.in_flight.acquire().await.map_err(|_| GatewayError::Closed)?;
        self.rate.until_ready().await;
        ready.await.map_err(GatewayError::CalledOff)?;
        let mut response = request(&self.client)
            .send()
            .await
            .map_err(|e| self.transport_error(e))?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        while body.len() < MAX_ANSWER_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(e) => return Err(self.transport_error(e)),
            }
        }
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    /// An answer that cannot be read, as an error naming this gateway.
    pub fn unexpected(&self, source: UnexpectedAnswer) -> GatewayError {
        GatewayError::Unexpected {
            endpoint: self.endpoint.clone(),
            source,
        }
    }

    fn transport_error(&self, error: reqwest::Error) -> GatewayError {
        let endpoint = self.endpoint.clone();
        let source = error.without_url();
        if source.is_connect() {
            GatewayError::Unreachable { endpoint, source }
        } else if source.is_timeout() {
            GatewayError::Timeout {
                endpoint,
                timeout: self.timeout,
            }
        } else {
            GatewayError::Transport { endpoint, source }
        }
    }
}

/// What makes one kind of gateway: its settings' problems, its endpoint, its request for
/// a message (pure, built before any slot is taken) and how its answers read.
pub trait Protocol: fmt::Debug + Send + Sync {
    /// For logs: `kannel`, `jasmin`, `webhook`.
    const NAME: &'static str;
    /// Every problem with the settings, none if they are usable.
    fn problems(&self) -> Vec<String>;
    /// The URL requests go to, without secrets (for errors and logs).
    fn endpoint(&self) -> String;
    /// The request for `msg`, or why it cannot be sent at all.
    fn request(&self, msg: &SmsMessage) -> Result<Request, GatewayError>;
    /// What the gateway's answer means.
    fn read_answer(&self, status: u16, body: &str) -> Result<SendOutcome, UnexpectedAnswer>;
    /// The gateway's own id for the message, when its answer carries one.
    fn message_id<'a>(&self, _body: &'a str) -> Option<&'a str> {
        None
    }
}

/// A request built from a message, applied to the client once a slot is free.
pub type Request = Box<dyn FnOnce(&reqwest::Client) -> reqwest::RequestBuilder + Send>;

/// One gateway of kind `P`, driven within its [`GatewayLimits`].
pub struct HttpGateway<P> {
    config: P,
    link: HttpLink,
}

impl<P: Protocol> fmt::Debug for HttpGateway<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpGateway")
            .field("kind", &P::NAME)
            .field("config", &self.config)
            .field("endpoint", &self.link.endpoint)
            .finish_non_exhaustive()
    }
}

impl<P: Protocol> HttpGateway<P> {
    /// Checks the settings (every problem at once) and builds the HTTP client: no proxy
    /// from the environment, no redirects (they would carry credentials elsewhere).
    pub fn new(config: P, limits: GatewayLimits) -> Result<Self, GatewayError> {
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(GatewayError::Config(problems));
        }
        let link = HttpLink::new(config.endpoint(), limits)?;
        Ok(Self { config, link })
    }

    pub fn config(&self) -> &P {
        &self.config
    }

    /// Refuses every later send with [`GatewayError::Closed`] (nothing sent); sends under
    /// way finish.
    pub fn close(&self) {
        self.link.close();
    }

    /// Sends one message: waits for a free slot and for the rate limit, then asks the
    /// gateway.
    pub async fn send(&self, msg: &SmsMessage) -> Result<SendOutcome, GatewayError> {
        self.send_when(msg, std::future::ready(Ok(()))).await
    }

    /// As [`HttpGateway::send`], with `ready` run just before the request leaves.
    pub async fn send_when(
        &self,
        msg: &SmsMessage,
        ready: impl Future<Output = Result<(), String>>,
    ) -> Result<SendOutcome, GatewayError> {
        let request = self.config.request(msg)?;
        let (status, body) = self.link.exchange(request, ready).await?;
        let outcome = self
            .config
            .read_answer(status, &body)
            .map_err(|e| self.link.unexpected(e));
        log_outcome(P::NAME, &msg.message_ref, self.config.message_id(&body), &outcome);
        outcome
    }
}

/// What a gateway said to one message, logged the same way for every kind: the number,
/// the text and the secrets are not logged, and numbers a gateway echoes back in a reason
/// are masked ([`loggable`]).
pub(crate) fn log_outcome(
    gateway: &'static str,
    message_ref: &MessageRef,
    gateway_message_id: Option<&str>,
    outcome: &Result<SendOutcome, GatewayError>,
) {
    match outcome {
        Ok(SendOutcome::Accepted) => {
            tracing::debug!(gateway, %message_ref, gateway_message_id, "sms accepted for delivery");
        }
        Ok(SendOutcome::Queued) => {
            tracing::info!(gateway, %message_ref, "sms queued by the gateway for later delivery");
        }
        Ok(SendOutcome::Rejected { status, reason, kind }) => {
            let reason = loggable(reason);
            tracing::warn!(gateway, %message_ref, status, ?kind, %reason, "sms rejected by the gateway");
        }
        Err(e) => {
            tracing::warn!(gateway, %message_ref, error = %e, "gateway answer unreadable");
        }
    }
}

/// A gateway's answer for a log: runs of 6 or more digits (a phone number a gateway echoes
/// back, as Jasmin's `Argument [to] has an invalid value: [...]` does) become `[number]`.
pub(crate) fn loggable(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len());
    let mut digits = String::new();
    let flush = |digits: &mut String, out: &mut String| {
        if digits.len() >= 6 {
            out.push_str("[number]");
        } else {
            out.push_str(digits);
        }
        digits.clear();
    };
    for c in reason.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
        } else {
            flush(&mut digits, &mut out);
            out.push(c);
        }
    }
    flush(&mut digits, &mut out);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn a_gateway_is_driven_at_its_burst_then_never_above_its_rate() {
        // A gateway that answers at once, so that only the rate paces the requests.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = socket.read(&mut buf).await {
                        if n == 0
                            || socket
                                .write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\nok")
                                .await
                                .is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        let limits = GatewayLimits {
            per_second: NonZeroU32::new(20).unwrap(),
            burst: NonZeroU32::new(3).unwrap(),
            ..GatewayLimits::default()
        };
        let link = HttpLink::new(format!("http://127.0.0.1:{port}"), limits).unwrap();
        let url = format!("http://127.0.0.1:{port}/send");
        let started = std::time::Instant::now();
        let mut sent_at = Vec::new();
        for _ in 0..13 {
            let (status, _) = link.exchange(|c| c.get(&url), async { Ok(()) }).await.unwrap();
            assert_eq!(status, 202);
            sent_at.push(started.elapsed());
        }
        // The burst goes at once; then one every 50 ms: the 13th no sooner than 500 ms in.
        assert!(sent_at[2] < Duration::from_millis(400), "{sent_at:?}");
        for (k, at) in sent_at.iter().enumerate().skip(3) {
            let earliest = Duration::from_millis(50 * (k as u64 - 2));
            assert!(
                *at + Duration::from_millis(5) >= earliest,
                "request {k} at {at:?}: {sent_at:?}"
            );
        }
    }

    #[test]
    fn numbers_are_masked_in_logged_reasons() {
        assert_eq!(
            loggable("Error \"Argument [to] has an invalid value: [84912345678].\""),
            "Error \"Argument [to] has an invalid value: [[number]].\""
        );
        assert_eq!(loggable("Error 412 at 12345"), "Error 412 at 12345");
        assert_eq!(loggable("+84912345678"), "+[number]");
    }
}
