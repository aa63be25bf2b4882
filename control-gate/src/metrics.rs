//! `/metrics` in the Prometheus text format (version 0.0.4).

use isms_ipc::ProjectName;
use isms_ipc::commserver::MqttStats;
use isms_ipc::kernel::{InstanceState, ServiceStatus};
use isms_ipc::resadmin::{DoeeStats, LATENCY_BUCKETS_US};
use std::collections::HashSet;
use std::fmt::Write;

/// Whose counters a caller of `/metrics` sees (the rest of the page names
/// no project).
#[derive(Debug, PartialEq)]
pub enum Shown {
    /// No project's: no token.
    Nothing,
    /// These projects': a user's own.
    Projects(HashSet<ProjectName>),
    /// Every project's: the metrics token, or a platform admin.
    Everything,
}

impl Shown {
    /// The counters of the projects shown.
    pub fn filter(&self, stats: Vec<DoeeStats>) -> Vec<DoeeStats> {
        match self {
            Shown::Nothing => Vec::new(),
            Shown::Projects(projects) => stats
                .into_iter()
                .filter(|s| projects.contains(&s.project))
                .collect(),
            Shown::Everything => stats,
        }
    }
}

/// Renders the services' state, the invocation counters and the MQTT
/// counters (left out when the CommServer did not answer).
pub fn render(services: &[ServiceStatus], stats: &[DoeeStats], mqtt: Option<&MqttStats>) -> String {
    let mut out = String::new();
    family(
        &mut out,
        "isms_invocations_total",
        "counter",
        "Invocations that ended, by Doee and status.",
    );
    for doee in stats {
        for (status, count) in &doee.by_status {
            let _ = writeln!(
                out,
                "isms_invocations_total{{project=\"{}\",doee=\"{}\",status=\"{}\"}} {count}",
                doee.project,
                doee.doee,
                status.as_str()
            );
        }
    }
    family(
        &mut out,
        "isms_invocation_duration_seconds",
        "histogram",
        "Time from acceptance by the Doer to the end of an invocation.",
    );
    for doee in stats {
        let labels = format!("project=\"{}\",doee=\"{}\"", doee.project, doee.doee);
        let mut cumulative = 0;
        for (i, count) in doee.latency_buckets.iter().enumerate() {
            cumulative += count;
            let le = LATENCY_BUCKETS_US
                .get(i)
                .map_or("+Inf".to_string(), |us| (*us as f64 / 1e6).to_string());
            let _ = writeln!(
                out,
                "isms_invocation_duration_seconds_bucket{{{labels},le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "isms_invocation_duration_seconds_sum{{{labels}}} {}\nisms_invocation_duration_seconds_count{{{labels}}} {cumulative}",
            doee.latency_sum_us as f64 / 1e6
        );
    }
    let per_instance: [Family; 7] = [
        (
            "isms_service_up",
            "gauge",
            "1 when the instance is up.",
            |s| u64::from(s.state == InstanceState::Up),
        ),
        (
            "isms_service_restarts_total",
            "counter",
            "Times the instance registered again after its first start.",
            |s| u64::from(s.restarts),
        ),
        (
            "isms_service_in_flight",
            "gauge",
            "Requests dispatched to the instance and not yet answered.",
            |s| u64::from(s.in_flight),
        ),
        (
            "isms_kernel_queue_depth",
            "gauge",
            "Requests for the service waiting in the kernel's scheduler.",
            |s| u64::from(s.queued),
        ),
        (
            "isms_service_queue_depth",
            "gauge",
            "Work waiting inside the instance (the Doer's pending queue).",
            |s| u64::from(s.inner_queue),
        ),
        (
            "isms_service_workers",
            "gauge",
            "Workers (Doer) or connections the instance holds.",
            |s| u64::from(s.workers),
        ),
        (
            "isms_service_requests_total",
            "counter",
            "Requests the instance answered.",
            |s| s.handled,
        ),
    ];
    for (name, kind, help, value) in per_instance {
        family(&mut out, name, kind, help);
        for service in services {
            let _ = writeln!(
                out,
                "{name}{{service=\"{}\",instance=\"{}\"}} {}",
                service.service.as_str(),
                service.instance,
                value(service)
            );
        }
    }
    if let Some(mqtt) = mqtt {
        let counters: [(&str, &str, &str, u64); 15] = [
            (
                "isms_mqtt_connected",
                "gauge",
                "1 while the CommServer is connected to the MQTT broker.",
                u64::from(mqtt.connected),
            ),
            (
                "isms_mqtt_received_total",
                "counter",
                "MQTT messages received from the broker.",
                mqtt.received,
            ),
            (
                "isms_mqtt_acknowledged_total",
                "counter",
                "MQTT messages acknowledged to the broker once recorded in the inbox.",
                mqtt.acknowledged,
            ),
            (
                "isms_mqtt_retried_total",
                "counter",
                "MQTT invocations run again after a failure.",
                mqtt.retried,
            ),
            (
                "isms_mqtt_dead_lettered_total",
                "counter",
                "MQTT messages given up on after their last attempt.",
                mqtt.dead_lettered,
            ),
            (
                "isms_mqtt_redelivered_total",
                "counter",
                "MQTT messages the broker delivered again (DUP flag).",
                mqtt.duplicates,
            ),
            (
                "isms_mqtt_published_total",
                "counter",
                "MQTT messages published by Doees and as replies.",
                mqtt.published,
            ),
            (
                "isms_mqtt_inbox_depth",
                "gauge",
                "MQTT messages recorded in the inbox and not yet run to the end.",
                mqtt.inbox_depth,
            ),
            (
                "isms_mqtt_dead_letters",
                "gauge",
                "Dead letters kept in the inbox.",
                mqtt.dead_letters,
            ),
            (
                "isms_mqtt_clients",
                "gauge",
                "Clients connected to the embedded broker.",
                mqtt.clients,
            ),
            (
                "isms_mqtt_sessions",
                "gauge",
                "Sessions the embedded broker holds, connected or kept for later.",
                mqtt.sessions,
            ),
            (
                "isms_mqtt_retained",
                "gauge",
                "Retained messages in the embedded broker.",
                mqtt.retained,
            ),
            (
                "isms_mqtt_delivered_total",
                "counter",
                "Messages the embedded broker sent to subscribers.",
                mqtt.delivered,
            ),
            (
                "isms_mqtt_dropped_total",
                "counter",
                "Deliveries the embedded broker dropped: a full session queue or a message over the client's maximum packet size.",
                mqtt.dropped,
            ),
            (
                "isms_mqtt_refused_total",
                "counter",
                "Connections, subscriptions and publishes the embedded broker refused for their rights.",
                mqtt.refused,
            ),
        ];
        for (name, kind, help, value) in counters {
            family(&mut out, name, kind, help);
            let _ = writeln!(out, "{name} {value}");
        }
    }
    out
}

/// A metric of every service instance: name, type, help, value.
type Family = (
    &'static str,
    &'static str,
    &'static str,
    fn(&ServiceStatus) -> u64,
);

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use isms_ipc::resadmin::InvocationStatus;

    #[test]
    fn mqtt_counters_appear_when_the_commserver_answered() {
        let mqtt = MqttStats {
            received: 7,
            inbox_depth: 2,
            ..MqttStats::default()
        };
        let text = render(&[], &[], Some(&mqtt));
        assert!(
            text.contains("# TYPE isms_mqtt_received_total counter\nisms_mqtt_received_total 7\n")
        );
        assert!(text.contains("isms_mqtt_inbox_depth 2\n"));
    }

    #[test]
    fn histograms_are_cumulative_and_end_at_the_count() {
        let mut buckets = vec![0; LATENCY_BUCKETS_US.len() + 1];
        buckets[0] = 2;
        buckets[3] = 1;
        *buckets.last_mut().unwrap() = 1;
        let stats = [DoeeStats {
            project: "demo".parse().unwrap(),
            doee: "hello".parse().unwrap(),
            by_status: vec![
                (InvocationStatus::Succeeded, 3),
                (InvocationStatus::Error, 1),
            ],
            latency_buckets: buckets,
            latency_sum_us: 20_000_000,
        }];
        let text = render(&[], &stats, None);
        assert!(!text.contains("isms_mqtt"));
        assert!(text.contains(
            "isms_invocations_total{project=\"demo\",doee=\"hello\",status=\"error\"} 1"
        ));
        assert!(text.contains(
            "isms_invocation_duration_seconds_bucket{project=\"demo\",doee=\"hello\",le=\"0.00025\"} 2"
        ));
        assert!(text.contains(
            "isms_invocation_duration_seconds_bucket{project=\"demo\",doee=\"hello\",le=\"0.0025\"} 3"
        ));
        assert!(text.contains(
            "isms_invocation_duration_seconds_bucket{project=\"demo\",doee=\"hello\",le=\"+Inf\"} 4"
        ));
        assert!(
            text.contains(
                "isms_invocation_duration_seconds_count{project=\"demo\",doee=\"hello\"} 4"
            )
        );
        assert!(
            text.contains(
                "isms_invocation_duration_seconds_sum{project=\"demo\",doee=\"hello\"} 20"
            )
        );
    }
}
