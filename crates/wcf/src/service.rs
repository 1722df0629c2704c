//! The service side, sans-I/O: a generated `…Server` turns a request body and its Action into a
//! [`Reply`] by calling the user's implementation of the contract trait. A host (net.tcp over
//! NMF, basicHttp) decodes envelopes, calls [`Service::dispatch`], and encodes what comes back.
//!
//! ```text
//!  Envelope ─ action, payload ─► Service::dispatch ─► contract trait method (user code)
//!                                      │                         │ Result<Resp, Fault<D>>
//!                                      ▼                         ▼
//!                           DispatchError::to_reply        Reply ─ into_envelope ─► Envelope
//! ```

use std::future::Future;

use ferry_nbfx::Element;
use ferry_soap::{AddressingVersion, Body, Envelope, QName, SoapVersion};

use crate::{
    contract::{Contract, Operation},
    data::{DataContract, DataError},
    fault::{DISPATCHER_NS, Fault, FaultCode, FaultDetail, action_not_supported},
};

/// The action of a fault about a message WS-Addressing could not route.
pub const ADDRESSING_FAULT_ACTION: &str = "http://www.w3.org/2005/08/addressing/fault";
pub use crate::fault::DISPATCHER_FAULT_ACTION;

/// A service a host can run: one generated `…Server` wrapping the user's implementation.
pub trait Service: Send + Sync {
    /// The contract served.
    fn contract(&self) -> &'static Contract;

    /// Handles one request: `action` is the envelope's Action header, `body` its first body
    /// element.
    ///
    /// # Errors
    ///
    /// [`DispatchError`] when no operation has this action or the body is not its request;
    /// send [`DispatchError::to_reply`] back (unless the operation is one-way).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future drops the operation's future: the user's code decides what that
    /// means.
    fn dispatch(
        &self,
        action: &str,
        body: Option<&Element>,
    ) -> impl Future<Output = Result<Reply, DispatchError>> + Send;
}

/// A shared service is served as itself (one service behind several hosts or transports).
impl<S: Service + ?Sized> Service for std::sync::Arc<S> {
    fn contract(&self) -> &'static Contract {
        (**self).contract()
    }

    fn dispatch(
        &self,
        action: &str,
        body: Option<&Element>,
    ) -> impl Future<Output = Result<Reply, DispatchError>> + Send {
        (**self).dispatch(action, body)
    }
}

/// What to send back for one request.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// A response message.
    Message {
        /// Its action (the operation's reply action).
        action: &'static str,
        /// The body element.
        body: Element,
    },
    /// A fault (typed details already turned into their element).
    Fault {
        /// Its action.
        action: String,
        /// The fault.
        fault: Fault,
    },
    /// Nothing: the operation is one-way.
    None,
}

impl Reply {
    /// The reply as an envelope with its Action header set; `None` for [`Reply::None`]. The
    /// host adds `RelatesTo` (the request's MessageID) and any other headers.
    pub fn into_envelope(
        self,
        version: SoapVersion,
        addressing: AddressingVersion,
    ) -> Option<Envelope> {
        let mut env = Envelope::new(version, addressing);
        match self {
            Self::Message { action, body } => {
                env.headers.action = Some(action.to_owned());
                env.body = Body::Payload(vec![body]);
            }
            Self::Fault { action, fault } => {
                env.headers.action = Some(action);
                env.body = Body::Fault(Box::new(fault.to_soap(version)));
            }
            Self::None => return None,
        }
        Some(env)
    }
}

/// A request the service cannot hand to an operation.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DispatchError {
    /// No operation of the contract has this action.
    #[error("no operation for action {0:?}")]
    UnknownAction(String),
    /// The body is empty.
    #[error("request for {action:?} has an empty body")]
    MissingBody {
        /// The request's action.
        action: &'static str,
    },
    /// The body is not the operation's request message.
    #[error("request for {action:?} cannot be read")]
    Deserialization {
        /// The request's action.
        action: &'static str,
        /// Why.
        #[source]
        source: DataError,
    },
}

impl DispatchError {
    /// The fault WCF's dispatcher answers with (for a WS-Addressing 1.0 request):
    /// `ActionNotSupported` for an unknown action, `DeserializationFailed` for an unreadable
    /// body.
    pub fn to_reply(&self) -> Reply {
        self.reply_for(AddressingVersion::Wsa10)
    }

    /// [`Self::to_reply`] for a request of the given addressing version: WCF puts
    /// `ActionNotSupported` in that version's namespace (the "none" namespace on basicHttp).
    pub fn reply_for(&self, addressing: AddressingVersion) -> Reply {
        let (subcode, action, reason) = match self {
            Self::UnknownAction(action) => (
                QName::new("a", addressing.namespace(), &action_not_supported().local),
                ADDRESSING_FAULT_ACTION,
                format!(
                    "The message with Action '{action}' cannot be processed at the receiver, due \
                     to a ContractFilter mismatch at the EndpointDispatcher. This may be because \
                     of either a contract mismatch (mismatched Actions between sender and \
                     receiver) or a binding/security mismatch between the sender and the \
                     receiver.  Check that sender and receiver have the same contract and the \
                     same binding (including security requirements, e.g. Message, Transport, \
                     None)."
                ),
            ),
            Self::MissingBody { .. } | Self::Deserialization { .. } => (
                QName::new("a", DISPATCHER_NS, "DeserializationFailed"),
                DISPATCHER_FAULT_ACTION,
                self.to_string(),
            ),
        };
        let mut fault = Fault::with_code(FaultCode::Sender, reason);
        fault.subcodes.push(subcode);
        Reply::Fault {
            action: action.to_owned(),
            fault,
        }
    }
}

/// Reads the request message of `op` from the body (generated code calls this).
///
/// # Errors
///
/// [`DispatchError::MissingBody`] or [`DispatchError::Deserialization`].
pub fn request<T: DataContract>(
    op: &'static Operation,
    body: Option<&Element>,
) -> Result<T, DispatchError> {
    let body = body.ok_or(DispatchError::MissingBody { action: op.action })?;
    T::from_element(body).map_err(|source| DispatchError::Deserialization {
        action: op.action,
        source,
    })
}

/// The reply for an operation's result (generated code calls this).
pub fn reply<R: DataContract, D: FaultDetail>(
    op: &'static Operation,
    result: Result<R, Fault<D>>,
) -> Reply {
    match (result, op.reply_action) {
        (_, None) => Reply::None,
        (Ok(r), Some(action)) => Reply::Message {
            action,
            body: r.to_element(),
        },
        (Err(f), Some(_)) => Reply::Fault {
            action: f.reply_action(),
            fault: f.untyped(),
        },
    }
}
