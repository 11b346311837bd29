//! `amqps://`: RabbitMQ through TLS with a private CA.

use std::time::Duration;

use cqrs_tests::*;

/// A TLS-terminating proxy in front of the machine's RabbitMQ with a fresh self-signed
/// certificate for `localhost`: returns its port and the certificate (PEM) to trust.
fn tls_proxy() -> (u16, String) {
    use tokio_rustls::rustls;
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let pem = certified.cert.pem();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![certified.cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(socket).await else {
                        return;
                    };
                    let Ok(mut upstream) = tokio::net::TcpStream::connect("127.0.0.1:5672").await
                    else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
                });
            }
        });
    });
    (port, pem)
}

/// `amqps://`: publish with confirms and consume through TLS, trusting a private CA; the wrong
/// CA is refused.
#[test]
fn amqps_publishes_and_consumes_through_tls() {
    use cqrs::transport::amqp::{AmqpConfig, AmqpTransport};
    use cqrs::transport::{Headers, Inbox, Outgoing, Publisher};
    let b = TestBroker::new();
    let (port, ca) = tls_proxy();
    let config = AmqpConfig {
        url: format!("amqps://guest:guest@localhost:{port}/%2f"),
        connection_name: format!("{}-tls", b.queue),
        exchange: b.exchange.clone(),
        tls_ca_pem: Some(ca),
        queue_type: cqrs::config::QueueType::Classic,
    };
    let tls = AmqpTransport::connect(config.clone()).unwrap();
    tls.declare_replica(&b.queue, &["item".into()], &b.delays)
        .unwrap();
    let body = ItemState::new(1, 0, at(0)).save().encode();
    let sent = Outgoing {
        routing_key: "item".into(),
        body: body.clone(),
        headers: Headers::new(),
        message_id: "m-1".into(),
    };
    assert_eq!(
        tls.publisher().unwrap().publish(&[sent]).unwrap(),
        [cqrs::transport::Confirm::Delivered]
    );
    let mut inbox = tls.inbox(&b.queue, 10, &b.delays).unwrap();
    let got = inbox.receive(10, Duration::from_secs(5)).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, body);
    inbox.ack_up_to(got[0].tag).unwrap();
    drop(inbox);

    let (_, other_ca) = tls_proxy();
    let err = AmqpTransport::connect(AmqpConfig {
        tls_ca_pem: Some(other_ca),
        ..config
    })
    .err()
    .expect("an untrusted certificate is refused");
    assert!(err.to_string().contains("connecting to RabbitMQ"), "{err}");
}
