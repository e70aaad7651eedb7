//! Per-bot counters and gauges kept small: one map entry per series, its label values
//! joined in one string, its value one atomic.
//!
//! The prometheus crate's `IntCounterVec` copies the metric's description, help text
//! and label names into every series: about 800 bytes each, which at 33 series a bot
//! made a quarter of a relay's memory with ten thousand bots. These keep about 100
//! bytes a series and build the exposition only when scraped. Same API as the crate's
//! vectors where the relay uses them: `with_label_values(..)` then `inc`, `set`, `get`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};

/// Separates label values in a series' key; a configured name never holds it.
const SEP: char = '\u{1f}';

thread_local! {
    /// The key of the series being looked up.
    static KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// A counter's handle: cheap to clone, counts into its series.
#[derive(Clone, Debug)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn inc(&self) {
        self.inc_by(1);
    }
    pub fn inc_by(&self, v: u64) {
        self.0.fetch_add(v, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A gauge's handle.
#[derive(Clone, Debug)]
pub struct Gauge(Arc<AtomicI64>);

impl Gauge {
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn dec(&self) {
        self.sub(1);
    }
    pub fn add(&self, v: i64) {
        self.0.fetch_add(v, Ordering::Relaxed);
    }
    pub fn sub(&self, v: i64) {
        self.0.fetch_sub(v, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// What a series holds, and how it is exposed.
pub trait Cell: Default + Send + Sync + 'static {
    type Handle;
    const TYPE: MetricType;
    fn handle(cell: &Arc<Self>) -> Self::Handle;
    fn expose(&self, metric: &mut proto::Metric);
}

impl Cell for AtomicU64 {
    type Handle = Counter;
    const TYPE: MetricType = MetricType::COUNTER;
    fn handle(cell: &Arc<Self>) -> Counter {
        Counter(Arc::clone(cell))
    }
    fn expose(&self, metric: &mut proto::Metric) {
        let mut counter = proto::Counter::default();
        counter.set_value(self.load(Ordering::Relaxed) as f64);
        metric.set_counter(counter);
    }
}

impl Cell for AtomicI64 {
    type Handle = Gauge;
    const TYPE: MetricType = MetricType::GAUGE;
    fn handle(cell: &Arc<Self>) -> Gauge {
        Gauge(Arc::clone(cell))
    }
    fn expose(&self, metric: &mut proto::Metric) {
        let mut gauge = proto::Gauge::default();
        gauge.set_value(self.load(Ordering::Relaxed) as f64);
        metric.set_gauge(gauge);
    }
}

/// Series of one metric by label values; clones share them (one goes to the registry).
pub struct Vector<C: Cell>(Arc<Inner<C>>);

struct Inner<C: Cell> {
    desc: Desc,
    labels: Vec<String>,
    series: RwLock<HashMap<Box<str>, Arc<C>>>,
}

impl<C: Cell> Clone for Vector<C> {
    fn clone(&self) -> Self {
        Vector(Arc::clone(&self.0))
    }
}

pub type CounterVec = Vector<AtomicU64>;
pub type GaugeVec = Vector<AtomicI64>;

impl<C: Cell> Vector<C> {
    /// A metric named `name` with these label names; register it with a registry.
    pub fn new(name: &str, help: &str, labels: &[&str]) -> Vector<C> {
        let labels: Vec<String> = labels.iter().map(|l| (*l).to_owned()).collect();
        let desc = Desc::new(name.into(), help.into(), labels.clone(), HashMap::new())
            .expect("a valid metric description");
        Vector(Arc::new(Inner {
            desc,
            labels,
            series: RwLock::new(HashMap::new()),
        }))
    }

    /// The series of these label values (in the order of the label names), created
    /// at 0 when new.
    pub fn with_label_values(&self, values: &[&str]) -> C::Handle {
        // Counted on every batch and call: the key is built in a reused buffer, and
        // only a new series allocates its own.
        KEY.with(|key| {
            let mut key = key.borrow_mut();
            self.write_key(values, &mut key);
            if let Some(cell) = self.0.series.read().unwrap().get(key.as_str()) {
                return C::handle(cell);
            }
            let mut series = self.0.series.write().unwrap();
            C::handle(series.entry(key.as_str().into()).or_default())
        })
    }

    /// Drops a series (a gauge of something that no longer exists).
    pub fn remove_label_values(&self, values: &[&str]) -> bool {
        let key = self.key(values);
        self.0
            .series
            .write()
            .unwrap()
            .remove(key.as_str())
            .is_some()
    }

    fn key(&self, values: &[&str]) -> String {
        let mut key = String::new();
        self.write_key(values, &mut key);
        key
    }

    fn write_key(&self, values: &[&str], key: &mut String) {
        assert_eq!(values.len(), self.0.labels.len(), "{}", self.0.desc.fq_name);
        key.clear();
        for (i, value) in values.iter().enumerate() {
            if i > 0 {
                key.push(SEP);
            }
            key.push_str(value);
        }
    }
}

impl<C: Cell> Collector for Vector<C> {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.0.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let inner = &*self.0;
        let series = inner.series.read().unwrap();
        // Label pairs in name order, as the crate's own vectors write them.
        let mut order: Vec<usize> = (0..inner.labels.len()).collect();
        order.sort_by_key(|&i| &inner.labels[i]);
        let metrics = series
            .iter()
            .map(|(key, cell)| {
                let values: Vec<&str> = key.split(SEP).collect();
                let pairs = order
                    .iter()
                    .map(|&i| {
                        let mut pair = proto::LabelPair::default();
                        pair.set_name(inner.labels[i].clone());
                        pair.set_value(values[i].to_owned());
                        pair
                    })
                    .collect();
                let mut metric = proto::Metric::default();
                metric.set_label(pairs);
                cell.expose(&mut metric);
                metric
            })
            .collect();
        let mut family = MetricFamily::default();
        family.set_name(inner.desc.fq_name.clone());
        family.set_help(inner.desc.help.clone());
        family.set_field_type(C::TYPE);
        family.set_metric(metrics);
        vec![family]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_exposed_like_the_crates_own() {
        let registry = prometheus::Registry::new();
        let ours = CounterVec::new("t_total", "Help.", &["bot", "code"]);
        registry.register(Box::new(ours.clone())).unwrap();
        ours.with_label_values(&["b", "409"]).inc_by(2);
        ours.with_label_values(&["a", "429"]);
        assert_eq!(ours.with_label_values(&["b", "409"]).get(), 2);
        let gauges = GaugeVec::new("g", "Help.", &["bot"]);
        registry.register(Box::new(gauges.clone())).unwrap();
        gauges.with_label_values(&["x"]).set(-3);
        gauges.with_label_values(&["y"]).set(1);
        assert!(gauges.remove_label_values(&["y"]));

        let mut text = Vec::new();
        prometheus::Encoder::encode(
            &prometheus::TextEncoder::new(),
            &registry.gather(),
            &mut text,
        )
        .unwrap();
        let text = String::from_utf8(text).unwrap();
        assert_eq!(
            text,
            "# HELP g Help.\n# TYPE g gauge\ng{bot=\"x\"} -3\n\
             # HELP t_total Help.\n# TYPE t_total counter\n\
             t_total{bot=\"a\",code=\"429\"} 0\nt_total{bot=\"b\",code=\"409\"} 2\n"
        );
    }
}
