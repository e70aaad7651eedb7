//! `ProcessCollector`: the standard `process_*` metrics of the relay's own process, read
//! from `/proc` at every scrape.
//!
//! It replaces the prometheus crate's collector, whose `process_cpu_seconds_total` counts
//! whole seconds only: a relay using a tenth of a core showed a flat line that jumped
//! every ten seconds. Here CPU time is `utime + stime` in clock ticks (10 ms on Linux)
//! over the tick rate, and the start time keeps its fraction too, as other client
//! libraries report them.

use std::collections::HashMap;

use procfs::process::{LimitValue, Process};
use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, Metric, MetricFamily, MetricType};

/// Name, help and type of each metric, in the order `collect` reads them.
const FAMILIES: [(&str, &str, MetricType); 7] = [
    (
        "process_cpu_seconds_total",
        "Total user and system CPU time spent in seconds.",
        MetricType::COUNTER,
    ),
    (
        "process_open_fds",
        "Number of open file descriptors.",
        MetricType::GAUGE,
    ),
    (
        "process_max_fds",
        "Maximum number of open file descriptors.",
        MetricType::GAUGE,
    ),
    (
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes.",
        MetricType::GAUGE,
    ),
    (
        "process_resident_memory_bytes",
        "Resident memory size in bytes.",
        MetricType::GAUGE,
    ),
    (
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds.",
        MetricType::GAUGE,
    ),
    (
        "process_threads",
        "Number of OS threads in the process.",
        MetricType::GAUGE,
    ),
];

pub struct ProcessCollector {
    descs: Vec<Desc>,
}

impl ProcessCollector {
    pub fn new() -> ProcessCollector {
        let descs = FAMILIES
            .iter()
            .map(|(name, help, _)| {
                Desc::new(
                    name.to_string(),
                    help.to_string(),
                    Vec::new(),
                    HashMap::new(),
                )
                .expect("valid metric")
            })
            .collect();
        ProcessCollector { descs }
    }
}

impl Collector for ProcessCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let values = read_values();
        FAMILIES
            .iter()
            .zip(values)
            // A value /proc could not give is left out rather than shown as 0.
            .filter_map(|((name, help, kind), value)| Some(family(name, help, *kind, value?)))
            .collect()
    }
}

/// The values of [`FAMILIES`], in order; `None` where `/proc` could not be read.
fn read_values() -> [Option<f64>; 7] {
    let Ok(me) = Process::myself() else {
        return [None; 7];
    };
    let ticks = procfs::ticks_per_second() as f64;
    let stat = me.stat().ok();
    let max_fds = me
        .limits()
        .ok()
        .and_then(|l| match l.max_open_files.soft_limit {
            LimitValue::Value(max) => Some(max as f64),
            LimitValue::Unlimited => None,
        });
    let start = stat.as_ref().and_then(|s| {
        let boot = procfs::boot_time_secs().ok()? as f64;
        Some(boot + s.starttime as f64 / ticks)
    });
    [
        stat.as_ref().map(|s| (s.utime + s.stime) as f64 / ticks),
        me.fd_count().ok().map(|n| n as f64),
        max_fds,
        stat.as_ref().map(|s| s.vsize as f64),
        stat.as_ref().map(|s| (s.rss * procfs::page_size()) as f64),
        start,
        stat.as_ref().map(|s| s.num_threads as f64),
    ]
}

fn family(name: &str, help: &str, kind: MetricType, value: f64) -> MetricFamily {
    let mut metric = Metric::default();
    if kind == MetricType::COUNTER {
        let mut counter = Counter::default();
        counter.set_value(value);
        metric.set_counter(counter);
    } else {
        let mut gauge = Gauge::default();
        gauge.set_value(value);
        metric.set_gauge(gauge);
    }
    let mut family = MetricFamily::default();
    family.set_name(name.to_owned());
    family.set_help(help.to_owned());
    family.set_field_type(kind);
    family.set_metric(vec![metric]);
    family
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_read_on_linux() {
        let families = ProcessCollector::new().collect();
        let names: Vec<&str> = families.iter().map(|f| f.name()).collect();
        let expected: Vec<&str> = FAMILIES.iter().map(|(name, _, _)| *name).collect();
        assert_eq!(names, expected);
        let value = |name: &str| {
            let f = families.iter().find(|f| f.name() == name).unwrap();
            let m = &f.get_metric()[0];
            m.get_gauge().value().max(m.get_counter().value())
        };
        assert!(value("process_resident_memory_bytes") > 0.0);
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_start_time_seconds") > 1.6e9);
    }
}
