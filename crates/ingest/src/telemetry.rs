//! MQTT telemetry from automatic stations: on `{prefix}/telemetry/{station_id}`, the JSON
//! station format (one observation or an array), each for the topic's own station. A
//! message is accepted or refused as a whole; refusals are recorded for operators.

use chrono::Utc;
use domain::{AlertStatus, StationId};
use store::Store;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A station's telemetry as the MQTT consumer hands it on: the station its topic names,
/// and the message.
pub type Telemetry = (StationId, protocol::InboundMessage);

use desk::{DeskError, Pipeline, Source};

/// Checks one telemetry message and returns its observations, or why it is refused.
pub fn check(
    station: &StationId,
    payload: &[u8],
    now: chrono::DateTime<Utc>,
    max_batch: usize,
) -> Result<Vec<domain::Observation>, String> {
    let observations = crate::station::parse_json(payload, now, max_batch).map_err(|errors| {
        errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.detail))
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    if let Some((i, o)) = observations
        .iter()
        .enumerate()
        .find(|(_, o)| o.station() != station)
    {
        return Err(format!(
            "[{i}].station: {:?} is not the topic's station {:?}",
            o.station().as_str(),
            station.as_str()
        ));
    }
    Ok(observations)
}

/// Feeds telemetry into the pipeline until `shutdown` or until the channel closes.
pub async fn run_telemetry(
    pipeline: Pipeline,
    store: Store,
    max_batch: usize,
    mut telemetry: mpsc::Receiver<Telemetry>,
    shutdown: CancellationToken,
) {
    loop {
        let (station, msg) = tokio::select! {
            _ = shutdown.cancelled() => return,
            next = telemetry.recv() => match next { Some(m) => m, None => return },
        };
        let now = Utc::now();
        let source = Source {
            name: format!("mqtt:{station}"),
            alert_status: AlertStatus::Actual,
        };
        let result = match check(&station, &msg.payload, now, max_batch) {
            Ok(observations) => match pipeline.accept(observations, &source, now).await {
                Ok(report) => {
                    tracing::debug!(station = %station, stored = report.stored, "telemetry accepted");
                    Ok(())
                }
                Err(DeskError::UnknownStation(s)) => Err(format!("station {s:?} is not configured")),
                Err(e) => {
                    tracing::error!(station = %station, error = %e, "telemetry could not be stored");
                    continue;
                }
            },
            Err(reason) => Err(reason),
        };
        if let Err(reason) = result {
            tracing::warn!(topic = %domain::cut(&msg.topic), reason = %domain::cut_to(&reason, domain::TEXT_CHARS), "telemetry refused");
            if let Err(e) = store.record_rejection("mqtt", &msg.topic, &reason, now).await {
                tracing::error!(error = %e, "recording a refused telemetry message failed");
            }
        }
    }
}
