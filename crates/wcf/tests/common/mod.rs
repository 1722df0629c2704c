//! Shared test helpers: an executor for futures that never wait on I/O, an in-memory transport
//! that carries envelopes to a `Service` through a real codec, and an infoset comparison.

#![allow(dead_code, unreachable_pub)]

use std::{
    future::Future,
    pin::pin,
    task::{Context, Poll, Waker},
};

use ferry_nbfx::{Attr, Document, Element, Limits, Node};
use ferry_soap::{AddressingVersion, BinarySession, Envelope, SoapVersion};
use ferry_wcf::{Reply, Service, Transport};

/// Runs a future that completes without waiting on anything outside the process.
pub fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..1000 {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
    panic!("future did not complete: it waits on something")
}

/// Which codec the loopback transport uses between client and service.
#[derive(Clone, Copy, Debug)]
pub enum Wire {
    /// SOAP 1.1 XML text (basicHttp).
    Text11,
    /// SOAP 1.2 binary with a session dictionary (net.tcp), one session per direction.
    Binary12,
}

/// A transport that encodes each request as a real envelope, decodes it, dispatches it to a
/// service, and carries the reply back the same way.
pub struct Loopback<S> {
    pub service: S,
    pub wire: Wire,
    sessions: std::sync::Mutex<(BinarySession, BinarySession, BinarySession, BinarySession)>,
    /// One-way messages the service received (actions).
    pub sent: std::sync::Mutex<Vec<String>>,
}

impl<S> Loopback<S> {
    pub fn new(service: S, wire: Wire) -> Self {
        let s = || BinarySession::new(Limits::default());
        Self {
            service,
            wire,
            sessions: std::sync::Mutex::new((s(), s(), s(), s())),
            sent: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Encodes and decodes `env` on the wire; `outbound` picks the direction's sessions.
    fn carry(&self, env: &Envelope, outbound: bool) -> Envelope {
        match self.wire {
            Wire::Text11 => Envelope::decode_text(&env.encode_text()).expect("text round trip"),
            Wire::Binary12 => {
                let mut guard = self.sessions.lock().expect("not poisoned");
                let (a, b, c, d) = &mut *guard;
                let (writer, reader) = if outbound { (a, b) } else { (c, d) };
                let bytes = writer.encode(env).expect("encode");
                reader.decode(&bytes).expect("decode")
            }
        }
    }

    fn versions(&self) -> (SoapVersion, AddressingVersion) {
        match self.wire {
            Wire::Text11 => (SoapVersion::Soap11, AddressingVersion::None),
            Wire::Binary12 => (SoapVersion::Soap12, AddressingVersion::Wsa10),
        }
    }

    fn request(&self, action: &str, body: Element) -> Envelope {
        let (v, a) = self.versions();
        let mut env = Envelope::new(v, a);
        env.headers.action = Some(action.to_owned());
        env.body = ferry_soap::Body::Payload(vec![body]);
        self.carry(&env, true)
    }
}

/// The loopback never fails.
#[derive(Debug, thiserror::Error)]
#[error("never")]
pub struct Never;

impl<S: Service> Transport for Loopback<S> {
    type Error = Never;

    async fn call(&self, action: &str, body: Element) -> Result<Envelope, Never> {
        let env = self.request(action, body);
        let action = env
            .headers
            .action
            .clone()
            .unwrap_or_else(|| action.to_owned());
        let reply = match self.service.dispatch(&action, env.payload()).await {
            Ok(r) => r,
            Err(e) => e.to_reply(),
        };
        let (v, a) = self.versions();
        let out = reply.into_envelope(v, a).expect("request/reply operation");
        Ok(self.carry(&out, false))
    }

    async fn send(&self, action: &str, body: Element) -> Result<(), Never> {
        let env = self.request(action, body);
        let reply = self
            .service
            .dispatch(action, env.payload())
            .await
            .expect("dispatch");
        assert_eq!(reply, Reply::None, "one-way operations reply nothing");
        self.sent
            .lock()
            .expect("not poisoned")
            .push(action.to_owned());
        Ok(())
    }
}

/// The infoset of an element as a string: names with namespaces, non-namespace attributes by
/// local name, text as .NET prints it (consecutive text records concatenated; numbers compared
/// by value, as .NET Framework prints 17 digits where we print the shortest form); prefixes and
/// namespace declarations left out.
pub fn infoset(el: &Element) -> String {
    let mut out = String::new();
    write_infoset(el, &mut out);
    out
}

fn write_infoset(el: &Element, out: &mut String) {
    out.push_str(&format!("<{{{}}}{}", el.namespace, el.local_name()));
    let mut attrs: Vec<String> = el
        .attributes
        .iter()
        .filter_map(|a| match a {
            Attr::Attribute(a) => Some(format!(" {}={}", a.name.text, a.value)),
            Attr::Xmlns(_) => None,
        })
        .collect();
    attrs.sort();
    out.push_str(&attrs.concat());
    out.push('>');
    let mut text = String::new();
    for node in &el.children {
        match node {
            Node::Text(t) => text.push_str(&t.to_string()),
            Node::Element(child) => {
                out.push_str(&std::mem::take(&mut text));
                write_infoset(child, out);
            }
            Node::Array(a) => {
                for item in a.items() {
                    out.push_str(&format!("<{}>{item}</>", a.element.name.text));
                }
            }
            Node::Comment(_) => {}
        }
    }
    out.push_str(&norm(&text));
    out.push_str("</>");
}

fn norm(text: &str) -> String {
    match ferry_nbfx::value::parse_double(text) {
        Some(v) if v.is_nan() => "NaN".into(),
        Some(v) => format!("{v:?}"),
        None => text.to_owned(),
    }
}

/// Text form: to XML and back through quick-xml.
pub fn via_text(el: &Element) -> Element {
    let xml = Document::from_root(el.clone()).to_xml();
    let options = ferry_nbfx::XmlOptions {
        limits: Limits::unlimited(),
        ..Default::default()
    };
    let doc = Document::parse_xml(&xml, &options)
        .unwrap_or_else(|e| panic!("{e}: {}", xml.chars().take(200).collect::<String>()));
    doc.root().expect("root").clone()
}

/// Binary form: MC-NBFX with a session string table (net.tcp), and back.
pub fn via_binary(el: &Element) -> Element {
    let mut writer = ferry_nbfx::WriterSession::default();
    let payload = Document::from_root(el.clone())
        .encode_with_table(&mut writer)
        .expect("encode");
    let mut reader = ferry_nbfx::SessionDictionary::new(&Limits::default());
    let table = reader.read_table(&payload).expect("table");
    let doc = Document::decode_with(&payload[table..], Some(&reader), Limits::unlimited())
        .expect("decode");
    doc.root().expect("root").clone()
}
