//! The services' side of `benches/gateway.rs`: sendMessage calls published to NATS
//! JetStream or Kafka, `<phase>:<i>` to chat `10_000_000 + i`, each returning once
//! the broker acknowledged it.

use std::time::Duration;

use super::e2e_polling::nats_url;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broker {
    Nats,
    Kafka,
}

impl Broker {
    pub fn name(self) -> &'static str {
        match self {
            Broker::Nats => "NATS",
            Broker::Kafka => "Kafka",
        }
    }
}

pub fn kafka_brokers() -> String {
    std::env::var("TEST_TGRELAY_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// A service publishing calls.
pub enum Publisher {
    Nats(Box<async_nats::jetstream::Context>),
    Kafka(rdkafka::producer::FutureProducer),
}

impl Publisher {
    pub async fn connect(broker: Broker) -> anyhow::Result<Publisher> {
        Ok(match broker {
            Broker::Nats => {
                let client = async_nats::connect(nats_url()).await?;
                Publisher::Nats(Box::new(async_nats::jetstream::new(client)))
            }
            Broker::Kafka => Publisher::Kafka(
                rdkafka::ClientConfig::new()
                    .set("bootstrap.servers", kafka_brokers())
                    .set("linger.ms", "0")
                    .create()?,
            ),
        })
    }

    /// Publishes one call; returns once the broker has it.
    pub async fn send(&self, route: &str, phase: &str, i: usize) -> anyhow::Result<()> {
        self.send_with(route, phase, i, None).await
    }

    /// As `send`, with `tg-priority` when `priority` is given.
    pub async fn send_with(
        &self,
        route: &str,
        phase: &str,
        i: usize,
        priority: Option<&str>,
    ) -> anyhow::Result<()> {
        let id = format!("{phase}:{i}");
        let chat = 10_000_000 + i;
        let body = format!(r#"{{"chat_id":{chat},"text":"{id}"}}"#);
        match self {
            Publisher::Nats(js) => {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("tg-method", "sendMessage");
                headers.insert("tg-request-id", id.as_str());
                if let Some(priority) = priority {
                    headers.insert("tg-priority", priority);
                }
                js.publish_with_headers(route.to_owned(), headers, body.into())
                    .await?
                    .await?;
            }
            Publisher::Kafka(producer) => {
                use rdkafka::message::{Header, OwnedHeaders};
                let mut headers = OwnedHeaders::new()
                    .insert(Header {
                        key: "tg-method",
                        value: Some("sendMessage"),
                    })
                    .insert(Header {
                        key: "tg-request-id",
                        value: Some(id.as_str()),
                    });
                if let Some(priority) = priority {
                    headers = headers.insert(Header {
                        key: "tg-priority",
                        value: Some(priority),
                    });
                }
                let key = chat.to_string();
                let record = rdkafka::producer::FutureRecord::to(route)
                    .key(&key)
                    .payload(&body)
                    .headers(headers);
                producer
                    .send(record, Duration::from_secs(30))
                    .await
                    .map_err(|(e, _)| e)?;
            }
        }
        Ok(())
    }

    /// Publishes `count` calls, many at a time.
    pub async fn send_all(&self, route: &str, phase: &str, count: usize) -> anyhow::Result<()> {
        for chunk in (0..count).collect::<Vec<_>>().chunks(256) {
            let sends = chunk.iter().map(|i| self.send(route, phase, *i));
            futures::future::try_join_all(sends).await?;
        }
        Ok(())
    }

    pub async fn clean(&self, names: &super::e2e_polling::Names) {
        if let Publisher::Nats(js) = self {
            for suffix in ["", "_OUT", "_OUT_LIMITS", "_OUT_REQUESTS"] {
                let _ = js.delete_stream(format!("{}{suffix}", names.stream)).await;
            }
            let _ = js
                .delete_key_value(format!("{}_OUT_REQUESTS", names.stream))
                .await;
        }
    }
}
