//! MQTT topic names of the receiver contract (`docs/receiver-protocol.md` §2).

use domain::{AlertId, CommuneCode, ProvinceCode, ReceiverId};

/// Builds and parses the topics under one prefix (default `canhbao/v1`) and province.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
    province: ProvinceCode,
}

/// What an inbound topic is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    Receipt(ReceiverId),
    Heartbeat(ReceiverId),
    Status(ReceiverId),
    /// Observations pushed by an automatic station.
    Telemetry(domain::StationId),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic prefix {0:?} must be non-empty levels without '+', '#' or a trailing '/'")]
    BadPrefix(String),
    #[error("topic {0:?} is not a receipt, heartbeat or status topic under this prefix")]
    Unknown(String),
    #[error("topic {topic:?} names an invalid receiver id: {source}")]
    BadReceiver { topic: String, source: domain::IdError },
    #[error("topic {topic:?} names an invalid station id: {source}")]
    BadStation { topic: String, source: domain::IdError },
}

impl Topics {
    pub fn new(prefix: &str, province: ProvinceCode) -> Result<Self, TopicError> {
        let ok = !prefix.is_empty()
            && prefix.split('/').all(|l| !l.is_empty())
            && !prefix.contains(['+', '#', '\0']);
        if !ok {
            return Err(TopicError::BadPrefix(prefix.to_owned()));
        }
        Ok(Self {
            prefix: prefix.to_owned(),
            province,
        })
    }

    pub fn province(&self) -> &ProvinceCode {
        &self.province
    }

    /// `[mqtt] topic_prefix`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `{prefix}/{province}/{commune}/alerts/{alert_id}`: QoS 1, retained.
    pub fn alert(&self, commune: &CommuneCode, alert: &AlertId) -> String {
        format!("{}/{}/{}/alerts/{}", self.prefix, self.province, commune, alert)
    }

    /// What a receiver of `commune` subscribes to.
    pub fn alerts_filter(&self, commune: &CommuneCode) -> String {
        format!("{}/{}/{}/alerts/+", self.prefix, self.province, commune)
    }

    /// `{prefix}/{province}/{commune}/state`: the commune state (protocol §4a), QoS 1,
    /// retained: which alerts of the commune are live, and which were replaced.
    pub fn state(&self, commune: &CommuneCode) -> String {
        format!("{}/{}/{}/state", self.prefix, self.province, commune)
    }

    /// Whether `topic` is the commune state topic of `commune`.
    pub fn is_state(&self, commune: &CommuneCode, topic: &str) -> bool {
        topic == self.state(commune)
    }

    /// `{prefix}/{province}/keys`: the key set (protocol §10a), QoS 1, retained: which
    /// alert-signing keys receivers trust, signed by the provisioning key.
    pub fn key_set(&self) -> String {
        format!("{}/{}/keys", self.prefix, self.province)
    }

    pub fn receipt(&self, receiver: &ReceiverId) -> String {
        format!("{}/receipts/{}", self.prefix, receiver)
    }

    pub fn heartbeat(&self, receiver: &ReceiverId) -> String {
        format!("{}/heartbeat/{}", self.prefix, receiver)
    }

    pub fn status(&self, receiver: &ReceiverId) -> String {
        format!("{}/status/{}", self.prefix, receiver)
    }

    /// Where an automatic station pushes its observations.
    pub fn telemetry(&self, station: &domain::StationId) -> String {
        format!("{}/telemetry/{}", self.prefix, station)
    }

    /// The filters the service subscribes to.
    pub fn inbound_filters(&self) -> [String; 4] {
        [
            format!("{}/receipts/+", self.prefix),
            format!("{}/heartbeat/+", self.prefix),
            format!("{}/status/+", self.prefix),
            format!("{}/telemetry/+", self.prefix),
        ]
    }

    /// Every commune's alert topics of the province, which the service watches so that
    /// a live alert's retained copy cleared by someone else is published again.
    pub fn province_alerts_filter(&self) -> String {
        format!("{}/{}/+/alerts/+", self.prefix, self.province)
    }

    /// The commune and alert id of a province alert topic.
    pub fn parse_any_alert(&self, topic: &str) -> Option<(CommuneCode, String)> {
        let rest = topic
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix('/')?
            .strip_prefix(self.province.as_str())?
            .strip_prefix('/')?;
        let (commune, _) = rest.split_once('/')?;
        let commune = CommuneCode::new(commune).ok()?;
        let id = self.parse_alert(&commune, topic)?;
        Some((commune, id))
    }

    /// Classifies an inbound topic and extracts its receiver id.
    pub fn parse_inbound(&self, topic: &str) -> Result<Inbound, TopicError> {
        let unknown = || TopicError::Unknown(topic.to_owned());
        let rest = topic
            .strip_prefix(self.prefix.as_str())
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(unknown)?;
        let (kind, id) = rest.split_once('/').ok_or_else(unknown)?;
        if kind == "telemetry" {
            let station = domain::StationId::new(id).map_err(|source| TopicError::BadStation {
                topic: topic.to_owned(),
                source,
            })?;
            return Ok(Inbound::Telemetry(station));
        }
        let receiver = ReceiverId::new(id).map_err(|source| TopicError::BadReceiver {
            topic: topic.to_owned(),
            source,
        })?;
        match kind {
            "receipts" => Ok(Inbound::Receipt(receiver)),
            "heartbeat" => Ok(Inbound::Heartbeat(receiver)),
            "status" => Ok(Inbound::Status(receiver)),
            _ => Err(unknown()),
        }
    }

    /// The alert id in the last level of an alert topic of `commune`, if `topic` is one.
    pub fn parse_alert(&self, commune: &CommuneCode, topic: &str) -> Option<String> {
        let head = format!("{}/{}/{}/alerts/", self.prefix, self.province, commune);
        topic
            .strip_prefix(head.as_str())
            .filter(|id| !id.contains('/'))
            .map(str::to_owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics() -> Topics {
        Topics::new("canhbao/v1", ProvinceCode::new("20").unwrap()).unwrap()
    }

    #[test]
    fn topics_follow_the_receiver_contract() {
        let t = topics();
        let c = CommuneCode::new("06385").unwrap();
        let a = AlertId::new("a-1").unwrap();
        assert_eq!(t.alert(&c, &a), "canhbao/v1/20/06385/alerts/a-1");
        assert_eq!(
            t.parse_any_alert("canhbao/v1/20/06385/alerts/a-1"),
            Some((c.clone(), "a-1".to_owned()))
        );
        assert_eq!(t.parse_any_alert("canhbao/v1/20/06385/state"), None);
        assert_eq!(t.parse_any_alert("canhbao/v1/21/06385/alerts/a-1"), None);
        assert_eq!(t.province_alerts_filter(), "canhbao/v1/20/+/alerts/+");
        assert_eq!(t.alerts_filter(&c), "canhbao/v1/20/06385/alerts/+");
        assert_eq!(
            t.parse_alert(&c, "canhbao/v1/20/06385/alerts/a-1").as_deref(),
            Some("a-1")
        );
        assert_eq!(t.parse_alert(&c, "canhbao/v1/20/06391/alerts/a-1"), None);
        let r = ReceiverId::new("loa-1").unwrap();
        assert_eq!(t.receipt(&r), "canhbao/v1/receipts/loa-1");
        assert_eq!(
            t.parse_inbound("canhbao/v1/heartbeat/loa-1"),
            Ok(Inbound::Heartbeat(r))
        );
    }

    #[test]
    fn foreign_and_malformed_topics_are_refused() {
        let t = topics();
        for bad in [
            "other/receipts/x",
            "canhbao/v1/receipts",
            "canhbao/v1/foo/x",
            "canhbao/v1x/receipts/a",
        ] {
            assert!(
                matches!(t.parse_inbound(bad), Err(TopicError::Unknown(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            t.parse_inbound("canhbao/v1/receipts/a/b"),
            Err(TopicError::BadReceiver { .. })
        ));
        for bad in ["", "a/", "a/+/b", "#", "/a"] {
            assert!(
                Topics::new(bad, ProvinceCode::new("20").unwrap()).is_err(),
                "{bad:?}"
            );
        }
    }
}
