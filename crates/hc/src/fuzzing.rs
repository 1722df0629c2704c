//! The Hybrid Connections parsers driven on text, for their fuzz targets (`fuzz/`) and the
//! tests that replay their corpora. Not an API: nothing here is stable, and production code
//! never calls it.

use crate::address::{self, HcQuery, HcTarget};
use crate::{Command, Right, Rights, Rule, Rules, SasToken};

/// A SAS token as a sender hands it over, parsed and checked against a rule the way every
/// front end checks it.
pub fn sas(token: &str) {
    let rules = Rules::new(vec![Rule::new("root", "a2V5", Rights::MANAGE)]);
    let _ = SasToken::parse(token);
    let _ = rules.authorize_any_host(token, &["ns", "127.0.0.1"], "orders/x", Right::Send, 1000);
}

/// A request target (`/$hc/{path}?sb-hc-…`), its query alone, and the helpers that take a
/// token out of an address.
///
/// # Panics
/// When taking the token out a second time changes anything.
pub fn address(text: &str) {
    let _ = HcTarget::parse(text);
    let _ = HcQuery::parse(text);
    let _ = address::decode_path(text);
    let _ = address::decode_query_value(text);
    let once = address::without_token(text);
    assert_eq!(
        address::without_token(&once),
        once,
        "stripping is idempotent"
    );
}

/// A listener's control-channel message.
///
/// # Panics
/// When a command that decoded does not decode again once encoded.
pub fn command(text: &str) {
    if let Ok(command) = Command::decode(text) {
        let again = Command::decode(&command.encode());
        assert!(
            again.is_ok(),
            "re-encoded command does not decode: {again:?}"
        );
    }
}
