//! Every configured SMS gateway behind one type: [`Gateway`] sends one message and reads
//! the delivery reports that come back to its callback, whatever kind it is.

use secrecy::ExposeSecret as _;
use std::fmt;

use crate::callback::{DeliveryReport, DlrError};
use crate::jasmin::{DLR_ACK, JasminGateway, parse_jasmin_dlr};
use crate::kannel::{KannelGateway, parse_dlr_query};
use crate::link::GatewayError;
use crate::message::{SendOutcome, SmsMessage};
use crate::webhook::{WebhookGateway, parse_webhook_dlr};

/// The kinds of gateway canhbao speaks to.
pub enum GatewayKind {
    /// Kannel's smsbox `sendsms` (GET).
    Kannel(KannelGateway),
    /// Jasmin's HTTP API (`POST /send`, form body).
    Jasmin(JasminGateway),
    /// A JSON webhook templated in the settings.
    Webhook(WebhookGateway),
}

/// One configured gateway, named by its id in `[sms.gateways]`.
pub struct Gateway {
    id: String,
    kind: GatewayKind,
}

impl fmt::Debug for Gateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            GatewayKind::Kannel(_) => "kannel",
            GatewayKind::Jasmin(_) => "jasmin",
            GatewayKind::Webhook(_) => "webhook",
        };
        f.debug_struct("Gateway")
            .field("id", &self.id)
            .field("kind", &kind)
            .finish()
    }
}

impl Gateway {
    pub fn new(id: impl Into<String>, kind: GatewayKind) -> Self {
        Self { id: id.into(), kind }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Hands one message to the gateway, within its rate limit and concurrency cap.
    pub async fn send(&self, msg: &SmsMessage) -> Result<SendOutcome, GatewayError> {
        self.send_when(msg, std::future::ready(Ok(()))).await
    }

    /// As [`Gateway::send`], with `ready` run once a slot is free and the rate limit
    /// allows, just before the request leaves; if it fails, nothing is sent.
    pub async fn send_when(
        &self,
        msg: &SmsMessage,
        ready: impl Future<Output = Result<(), String>>,
    ) -> Result<SendOutcome, GatewayError> {
        match &self.kind {
            GatewayKind::Kannel(g) => g.send_when(msg, ready).await,
            GatewayKind::Jasmin(g) => g.send_when(msg, ready).await,
            GatewayKind::Webhook(g) => g.send_when(msg, ready).await,
        }
    }

    /// Reads one delivery-report callback: its query string (without `?`) and its body.
    /// The gateway's secret is checked before anything else.
    pub fn parse_dlr(&self, query: &str, body: &str) -> Result<DeliveryReport, DlrError> {
        match &self.kind {
            GatewayKind::Kannel(g) => parse_dlr_query(query, g.config().dlr_secret.expose_secret()),
            GatewayKind::Jasmin(g) => parse_jasmin_dlr(query, body, g.config().dlr_secret.expose_secret()),
            GatewayKind::Webhook(g) => parse_webhook_dlr(query, body, g.config()),
        }
    }

    /// The body the callback must answer with (Jasmin retries unless it reads `ACK/Jasmin`).
    pub fn dlr_ack(&self) -> &'static str {
        match &self.kind {
            GatewayKind::Kannel(_) | GatewayKind::Webhook(_) => "OK",
            GatewayKind::Jasmin(_) => DLR_ACK,
        }
    }

    /// Refuses later sends; sends under way finish.
    pub fn close(&self) {
        match &self.kind {
            GatewayKind::Kannel(g) => g.close(),
            GatewayKind::Jasmin(g) => g.close(),
            GatewayKind::Webhook(g) => g.close(),
        }
    }
}
