//! The client side, sans-I/O: a generated `…Client<T>` turns typed calls into an action and a
//! body element for a [`Transport`], and the reply envelope back into the typed response or a
//! typed [`Fault`]. A net.tcp or basicHttp channel implements [`Transport`]: it adds the
//! addressing headers (To, MessageID, ReplyTo), encodes, sends, and correlates the reply.

use std::{error::Error as StdError, fmt, future::Future};

use ferry_nbfx::Element;
use ferry_soap::{Body, Envelope};

use crate::{
    contract::Operation,
    data::{DataContract, DataError},
    fault::{Fault, FaultDetail, NoDetail},
};

/// Carries request messages to a service and replies back.
pub trait Transport: Sync {
    /// Why a message could not be sent or no reply came.
    type Error: StdError + Send + Sync + 'static;

    /// Sends a request and waits for its reply envelope (a response or a fault).
    ///
    /// # Cancel safety
    ///
    /// Up to the implementation; a session channel that cannot match a late reply should close.
    fn call(
        &self,
        action: &str,
        body: Element,
    ) -> impl Future<Output = Result<Envelope, Self::Error>> + Send;

    /// Sends a one-way message; resolves once it is handed to the connection.
    ///
    /// # Cancel safety
    ///
    /// Up to the implementation.
    fn send(
        &self,
        action: &str,
        body: Element,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// Why a typed call failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum CallError<E, D = NoDetail> {
    /// The transport failed.
    Transport(E),
    /// The service answered with a fault (boxed: faults are rare and large).
    Fault(Box<Fault<D>>),
    /// The reply is not the operation's response message.
    Reply(DataError),
}

impl<E: fmt::Display, D: fmt::Debug> fmt::Display for CallError<E, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Transport(e) => write!(f, "transport failed: {e}"),
            Self::Fault(fault) => write!(f, "service returned a {fault}"),
            Self::Reply(e) => write!(f, "unexpected reply: {e}"),
        }
    }
}

impl<E: StdError + 'static, D: fmt::Debug + 'static> StdError for CallError<E, D> {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Self::Transport(e) => Some(e),
            Self::Fault(f) => Some(&**f),
            Self::Reply(e) => Some(e),
        }
    }
}

/// Calls a request/reply operation (generated code calls this).
///
/// # Errors
///
/// [`CallError`].
pub async fn call<T, Req, Resp, D>(
    transport: &T,
    op: &'static Operation,
    request: &Req,
) -> Result<Resp, CallError<T::Error, D>>
where
    T: Transport + ?Sized,
    Req: DataContract,
    Resp: DataContract,
    D: FaultDetail,
{
    let reply = transport
        .call(op.action, request.to_element())
        .await
        .map_err(CallError::Transport)?;
    match &reply.body {
        Body::Fault(f) => Err(CallError::Fault(Box::new(
            Fault::from_soap(f, reply.headers.action.as_deref()).map_err(CallError::Reply)?,
        ))),
        Body::Payload(p) => match p.first() {
            Some(el) => Resp::from_element(el).map_err(CallError::Reply),
            None => Err(CallError::Reply(DataError::UnexpectedElement {
                expected: format!("{{{}}}{}", Resp::NAMESPACE, Resp::NAME),
                found: "an empty body".into(),
            })),
        },
    }
}

/// Sends a one-way operation's message (generated code calls this).
///
/// # Errors
///
/// [`CallError::Transport`].
pub async fn send<T, Req>(
    transport: &T,
    op: &'static Operation,
    request: &Req,
) -> Result<(), CallError<T::Error>>
where
    T: Transport + ?Sized,
    Req: DataContract,
{
    transport
        .send(op.action, request.to_element())
        .await
        .map_err(CallError::Transport)
}
