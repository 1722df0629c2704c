//! What counts as the same answer: two envelopes' infosets (Mono's deviations set aside on
//! request), and WS-Addressing correlation with the requests the replay sent.

use std::collections::BTreeSet;

use ferry_nbfx::Document;

use super::diff::{AddressMap, Verdict, WSA, diff, item};
use super::mono::{MonoState, mono_deviations};

/// The first difference between two documents' infosets, as "path: what".
#[cfg(test)]
pub(super) fn compare(
    want: &Document,
    got: &Document,
    recorded_address: &str,
    address: &str,
) -> Option<String> {
    let addresses = AddressMap::default().with(recorded_address, address);
    compare_with(want, got, &addresses, None).diff
}

/// [`compare`] with the recorded addresses `addresses` maps, optionally setting Mono's
/// documented deviations aside (see [`ReplayArgs::mono_quirks`]; `mono` carries what earlier
/// answers of the connection showed).
pub(super) fn compare_with(
    want: &Document,
    got: &Document,
    addresses: &AddressMap,
    mono: Option<&mut MonoState>,
) -> Verdict {
    let none = AddressMap::default();
    let want = want
        .root()
        .map(|r| item(r, &mut Vec::new(), addresses, false));
    let got = got.root().map(|r| item(r, &mut Vec::new(), &none, false));
    match (want, got) {
        (Some(mut w), Some(mut g)) => {
            let mut known = BTreeSet::new();
            if let Some(state) = mono {
                mono_deviations(&mut w, &mut g, &mut known, state);
            }
            Verdict {
                diff: diff(&w, &g, ""),
                known,
            }
        }
        (None, None) => Verdict::default(),
        _ => Verdict::differ("one document is empty".into()),
    }
}

/// Whether a live answer correlates with the one request it answers (WS-Addressing 1.0 Core
/// §3.4: a reply's `RelatesTo` is its request's MessageID), for exchanges that pair one request
/// with one answer (HTTP). `message_id` is that request's MessageID (`None`: it had none, and
/// there is nothing to check); `recorded` and `live` are the whole answer envelopes. See
/// [`Outstanding::answer`] for the rules.
pub(super) fn correlation(
    message_id: Option<&str>,
    recorded: &Document,
    live: &Document,
    mono: bool,
) -> Verdict {
    let Some(id) = message_id else {
        return Verdict::default();
    };
    let mut outstanding = Outstanding::default();
    outstanding.sent(id.to_owned());
    outstanding.answer(recorded, live, mono)
}

/// The MessageIDs of the requests a net.tcp replay has sent and not yet seen answered, in the
/// order sent. A session may carry several calls at once (a client sends request 2 before
/// reply 1 arrives, and a service may answer them in any order), so an answer is checked
/// against every request still awaiting one, not against the last one sent.
#[derive(Debug, Default)]
pub(super) struct Outstanding {
    /// Sent, not yet answered.
    pub(super) pending: Vec<String>,
    /// Answered already: a second answer naming one of these is a difference of its own.
    pub(super) answered: BTreeSet<String>,
}

impl Outstanding {
    /// A request with MessageID `id` was sent.
    pub(super) fn sent(&mut self, id: String) {
        self.answered.remove(&id);
        self.pending.push(id);
    }

    /// Checks a live answer's correlation (`recorded` and `live` are the whole answer
    /// envelopes) and, when it names a pending request, takes that request off the list. A
    /// `RelatesTo` naming a request already answered, or one never sent, is a difference. A
    /// live answer without one differs when the recorded answer had one; where the recording
    /// has none either (Mono's faults, FINDINGS §8) it matches, named as §8 under `mono` when
    /// a request awaits an answer (otherwise there is nothing it could have related to).
    pub(super) fn answer(&mut self, recorded: &Document, live: &Document, mono: bool) -> Verdict {
        match addressing_header(live, "RelatesTo") {
            Some(relates_to) => {
                if let Some(at) = self.pending.iter().position(|id| *id == relates_to) {
                    let id = self.pending.remove(at);
                    self.answered.insert(id);
                    Verdict::default()
                } else if self.answered.contains(&relates_to) {
                    Verdict::differ(format!(
                        "/Envelope/Header/RelatesTo: {relates_to:?} names a request already \
                         answered{}",
                        self.awaiting()
                    ))
                } else {
                    Verdict::differ(format!(
                        "/Envelope/Header/RelatesTo: {relates_to:?} names no request this \
                         replay sent{}",
                        self.awaiting()
                    ))
                }
            }
            None if addressing_header(recorded, "RelatesTo").is_some() => {
                Verdict::differ(format!("/Envelope/Header: no RelatesTo{}", self.awaiting()))
            }
            None if mono && !self.pending.is_empty() => Verdict {
                diff: None,
                known: BTreeSet::from(["§8"]),
            },
            None => Verdict::default(),
        }
    }

    /// ", awaiting an answer: MessageID …" for a difference's text, or "" when none awaits.
    pub(super) fn awaiting(&self) -> String {
        match self.pending.as_slice() {
            [] => ", and no request awaits an answer".into(),
            [id] => format!(", the request awaiting an answer has MessageID {id:?}"),
            ids => format!(", the requests awaiting an answer have MessageIDs {ids:?}"),
        }
    }
}

/// The text of an envelope's WS-Addressing header `local` (`MessageID`, `RelatesTo`), either
/// addressing version, trimmed.
pub(super) fn addressing_header(envelope: &Document, local: &str) -> Option<String> {
    let root = envelope.root()?;
    if root.local_name() != "Envelope" {
        return None;
    }
    let header = root
        .elements()
        .find(|e| e.local_name() == "Header" && e.namespace == root.namespace)?;
    header
        .elements()
        .find(|e| e.local_name() == local && WSA.contains(&e.namespace.as_str()))
        .map(|e| e.text().trim().to_owned())
}
