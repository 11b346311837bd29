//! The `nats` group: the relay and the drain on a private nats-server with JetStream, beside
//! async-nats publishing and pulling the same messages and the outbox's own claim-and-delete, in
//! the same run; with the `e2e` and `latency` groups it adds a PostgreSQL + NATS stack.

use std::sync::Arc;
use std::time::Instant;

use cqrs::Relay;
use cqrs::transport::nats::NatsTransport;
use cqrs_tests::PrivateNats;
use cqrs_tests::items::{CQRS_ID, MASTER_TABLE};

use crate::raw_nats;
use crate::stats::Runs;
use crate::{Args, Bench, Stack, clear, fill};

/// The consumer the raw pull ceiling reads the relay's messages from (a second replica queue).
const TAP: &str = "bench_tap";
/// The stream the raw publish ceiling goes to, with two consumers: the relay's fan-out.
const SINK: &str = "bench_sink";

/// The private server and a connection to it.
pub struct NatsServer {
    server: PrivateNats,
    pub transport: Arc<NatsTransport>,
}

impl Bench {
    /// The private nats-server, started on first use, and a connection to it on the bench's
    /// exchange.
    fn nats_server(&mut self) -> cqrs::Result<&NatsServer> {
        if self.nats.is_none() {
            let server = PrivateNats::start();
            let transport = NatsTransport::connect(cqrs::transport::nats::NatsConfig {
                url: server.url(),
                connection_name: "bench-raw".into(),
                exchange: self.broker.exchange.clone(),
                tls_ca_file: None,
                dead_letter_ttl: std::time::Duration::from_secs(3600),
            })?;
            self.nats = Some(NatsServer { server, transport });
        }
        Ok(self.nats.as_ref().expect("started"))
    }

    /// PostgreSQL master and replica (the bench's) with the private nats-server.
    pub(crate) fn nats_stack(&mut self) -> cqrs::Result<Stack> {
        let url = self.nats_server()?.server.url();
        Ok(Stack {
            label: "PostgreSQL + NATS",
            master: self.master.url.clone(),
            replica: self.replica.url.clone(),
            broker: url,
        })
    }

    /// The relay publishing `--messages` captured rows to JetStream, against async-nats publishing
    /// the same messages (read back from a second consumer) and against the outbox's own
    /// claim-and-delete of as many rows (the lower of the two bounds the relay); then `consume -w
    /// 1` and `-w 2` draining them, against async-nats pulling them with an ack each. Each pair's
    /// order alternates run by run.
    pub(crate) fn nats_relay_and_drain(&mut self, args: &Args) -> cqrs::Result<()> {
        let url = self.nats_server()?.server.url();
        let t = self.nats_server()?.transport.clone();
        let settings = cqrs::Settings {
            broker_url: Some(url.clone()),
            exchange: self.broker.exchange.clone(),
            queue: Some(self.broker.queue.clone()),
            service_name: "bench".into(),
            ..cqrs::Settings::default()
        };
        let broker = cqrs::transport::connect(&settings, "bench")?;
        let ids = [CQRS_ID.to_string()];
        broker.declare_replica(&self.broker.queue, &ids, &[])?;
        broker.declare_replica(TAP, &ids, &[])?;
        raw_nats::sink(&t, SINK, &["a", "b"]);
        let n = args.messages;
        // CPU of this process (the relay runs in it), PostgreSQL and the nats-server.
        let meter = crate::cpu::Meter {
            broker: self.nats_server()?.server.pid(),
            ..self.meter
        };
        let publish = |messages: &[raw_nats::Got]| {
            let start = meter.read();
            let took = raw_nats::publish(&t, &format!("{SINK}.item"), messages);
            let cpu = meter.since(&start, 0.0).per_row(n);
            raw_nats::purge(&t, SINK);
            (n as f64 / took.as_secs_f64(), cpu)
        };
        // Per run: CPU per message of the relay, of the raw publish and of the raw claim-and-delete.
        let mut cpu: [Vec<crate::cpu::Window>; 3] = Default::default();
        let mut cpu_sum = Runs::default();
        let (mut by_publish, mut by_outbox, mut by_lower, mut by_both) = (
            Runs::default(),
            Runs::default(),
            Runs::default(),
            Runs::default(),
        );
        let mut drain = [Runs::default(), Runs::default()];
        let mut last: Option<Vec<raw_nats::Got>> = None;
        let mut turn = 0usize;
        for _ in 0..args.runs {
            for workers in [1, 2] {
                turn += 1;
                let first = turn.is_multiple_of(2);
                // async-nats goes first every other turn, with the previous turn's messages.
                let early = last.as_deref().filter(|_| first).map(publish);
                let early_outbox = if first {
                    Some(self.outbox_rate(n, &meter)?)
                } else {
                    None
                };
                self.clear_replica()?;
                clear(
                    &mut cqrs::Db::connect(&self.master.url)?,
                    &[MASTER_TABLE, "cqrs_outbox"],
                )?;
                fill(&self.master.url, n)?;
                let mut relay = Relay::new(
                    cqrs::Db::connect(&self.master.url)?,
                    broker.publisher()?,
                    settings.clone(),
                )
                .reconnect_with(&self.master.url);
                let start = meter.read();
                let started = Instant::now();
                relay.drain()?;
                let rate = n as f64 / started.elapsed().as_secs_f64();
                let relay_cpu = meter.since(&start, 0.0).per_row(n);
                let master = self.master.url.clone();
                self.check_relayed(&master, "relay alone [NATS]");
                let pulled = if first {
                    Some(raw_nats::pull(&t, &self.broker.exchange, TAP, n))
                } else {
                    None
                };
                let drained = self.drain_process_on(args, workers, n, &url)?;
                if drained.is_some() {
                    self.compare(&self.pg(), "after a drain from NATS")?;
                }
                let pulled = match pulled {
                    Some(p) => p,
                    None => raw_nats::pull(&t, &self.broker.exchange, TAP, n),
                };
                // After the drain was compared: it empties the master.
                let outbox = match early_outbox {
                    Some(o) => o,
                    None => self.outbox_rate(n, &meter)?,
                };
                let Some((got, took)) = pulled else {
                    self.problems
                        .push(format!("async-nats did not pull {n} messages from the tap"));
                    for r in [&mut by_publish, &mut by_outbox, &mut by_lower, &mut by_both] {
                        r.fail();
                    }
                    drain[workers - 1].fail();
                    continue;
                };
                let (published, publish_cpu) = early.unwrap_or_else(|| publish(&got));
                let (outbox, outbox_cpu) = outbox;
                cpu_sum.push(
                    relay_cpu.total(),
                    Some(publish_cpu.total() + outbox_cpu.total()),
                );
                for (runs, w) in cpu.iter_mut().zip([relay_cpu, publish_cpu, outbox_cpu]) {
                    runs.push(w);
                }
                by_publish.push(rate, Some(published));
                by_outbox.push(rate, Some(outbox));
                by_lower.push(rate, Some(published.min(outbox)));
                by_both.push(rate, Some(1.0 / (1.0 / published + 1.0 / outbox)));
                last = Some(got);
                match drained {
                    Some((d, _, _)) => {
                        drain[workers - 1].push(d, Some(n as f64 / took.as_secs_f64()))
                    }
                    None => {
                        self.problems.push(format!(
                            "consume -w {workers} did not apply {n} messages from NATS"
                        ));
                        drain[workers - 1].fail();
                    }
                }
            }
        }
        self.add(
            format!("relay alone, {n} messages [NATS]"),
            "msgs/s",
            "the lower of the two below, per run (target: relay ≥ 80%)",
            &by_lower,
        );
        self.add(
            format!("relay alone, {n} messages [NATS], against both ceilings' costs added"),
            "msgs/s",
            "1 / (1/publish + 1/outbox) per run: each ceiling alone has both cores, the relay does both on them",
            &by_both,
        );
        self.add(
            format!("relay alone, {n} messages [NATS], against the publish ceiling"),
            "msgs/s",
            &format!(
                "async-nats publish of the same messages (headers, Nats-Msg-Id) with acks, {} in flight at most, 2 consumers",
                raw_nats::WINDOW
            ),
            &by_publish,
        );
        self.add(
            format!("relay alone, {n} messages [NATS], against the outbox's own ceiling"),
            "msgs/s",
            "DELETE … RETURNING of 500 outbox rows per transaction, no broker",
            &by_outbox,
        );
        self.add(
            "CPU per message, relay alone [NATS]".into(),
            "µs/msg",
            "the raw publish's and the raw claim-and-delete's CPU per message added (this process, PostgreSQL, nats-server)",
            &cpu_sum,
        );
        let [relay_cpu, publish_cpu, outbox_cpu] = cpu;
        self.add_cpu(format!("relay alone [NATS], {n} messages"), relay_cpu);
        self.add_cpu(
            "async-nats publish of the same messages".into(),
            publish_cpu,
        );
        self.add_cpu("outbox claim-and-delete of as many rows".into(), outbox_cpu);
        for (i, d) in drain.iter().enumerate() {
            self.add(
                format!("replica drains {n} messages, consume -w {} [NATS]", i + 1),
                "msgs/s",
                "async-nats pull of the same messages, batches of 500, an ack each",
                d,
            );
        }
        Ok(())
    }

    /// Messages per second of the outbox's claim-and-delete of `n` freshly captured rows (the
    /// master left emptied), and its CPU per row as `meter` reads it.
    fn outbox_rate(
        &mut self,
        n: usize,
        meter: &crate::cpu::Meter,
    ) -> cqrs::Result<(f64, crate::cpu::Window)> {
        let mut db = cqrs::Db::connect(&self.master.url)?;
        clear(&mut db, &[MASTER_TABLE, "cqrs_outbox"])?;
        fill(&self.master.url, n)?;
        let start = meter.read();
        let took = raw_nats::claim_and_delete(&mut db, n)?;
        let cpu = meter.since(&start, 0.0).per_row(n);
        clear(&mut db, &[MASTER_TABLE, "cqrs_outbox"])?;
        Ok((n as f64 / took.as_secs_f64(), cpu))
    }
}
