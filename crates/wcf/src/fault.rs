//! Typed SOAP faults: what a service operation returns instead of its response, and what a
//! client gets back, with the operation's declared fault details (`[FaultContract]`) typed.

use std::fmt;

use ferry_nbfx::{Element, XmlString};
use ferry_soap::{QName, SoapVersion, version::WSA10_NS};

use crate::data::DataError;

/// The WS-Addressing 1.0 action of a fault that names no action of its own.
pub const DEFAULT_FAULT_ACTION: &str = ferry_soap::version::WSA10_FAULT_ACTION;

/// The action WCF's dispatcher sends its own faults with.
pub const DISPATCHER_FAULT_ACTION: &str =
    "http://schemas.microsoft.com/net/2005/12/windowscommunicationfoundation/dispatcher/fault";

/// The namespace of WCF's dispatcher fault subcodes (`InternalServiceFault`,
/// `DeserializationFailed`).
pub const DISPATCHER_NS: &str =
    "http://schemas.microsoft.com/net/2005/12/windowscommunicationfoundation/dispatcher";

/// The reason WCF gives for an unhandled exception when the service does not include
/// exception details in faults (`IncludeExceptionDetailInFaults = false`, the default).
pub const INTERNAL_ERROR_REASON: &str = "The server was unable to process the request due to an internal error.  For more information about the error, either turn on IncludeExceptionDetailInFaults (either from ServiceBehaviorAttribute or from the <serviceDebug> configuration behavior) on the server in order to send the exception information back to the client, or turn on tracing as per the Microsoft .NET Framework SDK documentation and inspect the server trace logs.";

/// The fault code, independent of the SOAP version (which spells `Sender` as `Client` in 1.1).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum FaultCode {
    /// The message was wrong (SOAP 1.2 `Sender`, 1.1 `Client`); the default of
    /// `FaultException<T>`.
    #[default]
    Sender,
    /// The service failed (SOAP 1.2 `Receiver`, 1.1 `Server`).
    Receiver,
    /// Any other code, e.g. WCF's `FaultCode("DivideByZero", ns)`.
    Other(QName),
}

/// The typed details an operation declares. Generated code implements it with one enum per
/// operation (a variant per `wsdl:fault`); [`NoDetail`] is the empty set.
pub trait FaultDetail: Sized {
    /// The fault's WS-Addressing action (`…/ICalculator/SafeDivideCalcFaultFault`).
    fn action(&self) -> &'static str;

    /// The detail element (the data contract, not the SOAP `Detail` wrapper).
    fn to_element(&self) -> Element;

    /// Reads a detail element; `Ok(None)` when it is none of the declared details.
    ///
    /// # Errors
    ///
    /// [`DataError`] when it has a declared name but bad content.
    fn from_element(element: &Element) -> Result<Option<Self>, DataError>;
}

/// No declared fault details (an operation without `[FaultContract]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoDetail {}

impl FaultDetail for NoDetail {
    fn action(&self) -> &'static str {
        match *self {}
    }

    fn to_element(&self) -> Element {
        match *self {}
    }

    fn from_element(_: &Element) -> Result<Option<Self>, DataError> {
        Ok(None)
    }
}

/// A SOAP fault with an optional typed detail `D`.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault<D = NoDetail> {
    /// The code.
    pub code: FaultCode,
    /// SOAP 1.2 subcodes, outermost first (dropped in SOAP 1.1).
    pub subcodes: Vec<QName>,
    /// The reason text.
    pub reason: String,
    /// The typed detail, when the fault carries one the operation declares.
    pub detail: Option<D>,
    /// A detail element that is none of the declared ones (e.g. WCF's `ExceptionDetail`), as
    /// received; not written when `detail` is set.
    pub other_detail: Option<Element>,
    /// The action, when it is not the detail's declared one or [`DEFAULT_FAULT_ACTION`].
    pub action: Option<String>,
}

impl<D> Fault<D> {
    /// A fault blaming the sender with this reason and no detail.
    pub fn sender(reason: impl Into<String>) -> Self {
        Self::with_code(FaultCode::Sender, reason)
    }

    /// A fault blaming the service with this reason and no detail.
    pub fn receiver(reason: impl Into<String>) -> Self {
        Self::with_code(FaultCode::Receiver, reason)
    }

    /// A fault with a typed detail (the code `Sender`, as `FaultException<T>` has).
    pub fn with_detail(reason: impl Into<String>, detail: D) -> Self {
        Self {
            detail: Some(detail),
            ..Self::sender(reason)
        }
    }

    /// The generic fault WCF sends for an unhandled exception (no details): code `Receiver`,
    /// subcode `InternalServiceFault` in the dispatcher namespace, [`INTERNAL_ERROR_REASON`],
    /// sent with the dispatcher's fault action (SOAP 1.1 writes the subcode as `faultcode`).
    pub fn internal_error() -> Self {
        let mut fault = Self::receiver(INTERNAL_ERROR_REASON);
        fault
            .subcodes
            .push(QName::new("a", DISPATCHER_NS, "InternalServiceFault"));
        fault.action = Some(DISPATCHER_FAULT_ACTION.to_owned());
        fault
    }

    /// A fault with this code.
    pub fn with_code(code: FaultCode, reason: impl Into<String>) -> Self {
        Self {
            code,
            subcodes: Vec::new(),
            reason: reason.into(),
            detail: None,
            other_detail: None,
            action: None,
        }
    }

    /// The same fault without its typed detail (kept as `other_detail` when it had one).
    pub fn untyped(self) -> Fault
    where
        D: FaultDetail,
    {
        let other = self
            .detail
            .as_ref()
            .map(FaultDetail::to_element)
            .or(self.other_detail);
        Fault {
            code: self.code,
            subcodes: self.subcodes,
            reason: self.reason,
            detail: None,
            other_detail: other,
            action: self.action,
        }
    }
}

impl<D: FaultDetail> Fault<D> {
    /// The action to send the fault with: explicit, else the detail's declared action, else
    /// [`DEFAULT_FAULT_ACTION`].
    pub fn reply_action(&self) -> String {
        if let Some(a) = &self.action {
            return a.clone();
        }
        self.detail
            .as_ref()
            .map_or(DEFAULT_FAULT_ACTION, FaultDetail::action)
            .to_owned()
    }

    /// The SOAP fault for an envelope of `version`, detail inside `Detail` / `detail`.
    pub fn to_soap(&self, version: SoapVersion) -> ferry_soap::Fault {
        let standard = |v12: &str, v11: &str| match version {
            SoapVersion::Soap12 => QName::new("s", version.namespace(), v12),
            SoapVersion::Soap11 => QName::new("s", version.namespace(), v11),
        };
        let code = match (&self.code, version, self.subcodes.first()) {
            // SOAP 1.1 has no subcodes: WCF writes the first subcode as the code itself
            // (`a:ActionNotSupported`, `a:InternalServiceFault`), as MessageFault.WriteTo11 does.
            (_, SoapVersion::Soap11, Some(sub)) => sub.clone(),
            (FaultCode::Sender, ..) => standard("Sender", "Client"),
            (FaultCode::Receiver, ..) => standard("Receiver", "Server"),
            (FaultCode::Other(q), ..) => q.clone(),
        };
        let inner = self
            .detail
            .as_ref()
            .map(FaultDetail::to_element)
            .or_else(|| self.other_detail.clone());
        let detail = inner.map(|el| {
            let wrapper = match version {
                SoapVersion::Soap12 => {
                    Element::new("s", XmlString::prefer_static("Detail"), version.namespace())
                }
                SoapVersion::Soap11 => Element::new("", XmlString::prefer_static("detail"), ""),
            };
            wrapper.with_element(el)
        });
        ferry_soap::Fault {
            code,
            subcodes: match version {
                SoapVersion::Soap12 => self.subcodes.clone(),
                SoapVersion::Soap11 => Vec::new(),
            },
            reason: self.reason.clone(),
            lang: Some("en-US".into()),
            node: None,
            role: None,
            detail,
        }
    }

    /// Reads a received SOAP fault; the first detail element becomes `detail` when it is one of
    /// `D`'s, else `other_detail`.
    ///
    /// # Errors
    ///
    /// [`DataError`] when the detail has a declared name but bad content.
    pub fn from_soap(fault: &ferry_soap::Fault, action: Option<&str>) -> Result<Self, DataError> {
        let code = if fault.is_sender() {
            FaultCode::Sender
        } else if fault.is_receiver() {
            FaultCode::Receiver
        } else {
            FaultCode::Other(fault.code.clone())
        };
        let inner = fault.detail.as_ref().and_then(|d| d.elements().next());
        let detail = match inner {
            Some(el) => D::from_element(el)?,
            None => None,
        };
        Ok(Self {
            code,
            subcodes: fault.subcodes.clone(),
            reason: fault.reason.clone(),
            other_detail: if detail.is_none() {
                inner.cloned()
            } else {
                None
            },
            detail,
            action: action.map(str::to_owned),
        })
    }
}

impl<D: fmt::Debug> fmt::Display for Fault<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fault: {}", self.reason)?;
        if let Some(d) = &self.detail {
            write!(f, " ({d:?})")?;
        }
        Ok(())
    }
}

impl<D: fmt::Debug> std::error::Error for Fault<D> {}

/// The subcode WS-Addressing 1.0 defines for an action nobody handles.
pub fn action_not_supported() -> QName {
    QName::new("a", WSA10_NS, "ActionNotSupported")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_codes_follow_the_version() {
        let f: Fault = Fault::sender("bad");
        assert_eq!(f.to_soap(SoapVersion::Soap11).code.local, "Client");
        assert_eq!(f.to_soap(SoapVersion::Soap12).code.local, "Sender");
        let back = Fault::<NoDetail>::from_soap(&f.to_soap(SoapVersion::Soap11), None).unwrap();
        assert_eq!(back.code, FaultCode::Sender);
        assert_eq!(f.reply_action(), DEFAULT_FAULT_ACTION);
    }

    #[test]
    fn soap11_writes_the_first_subcode_as_the_code() {
        let f: Fault = Fault::internal_error();
        let v12 = f.to_soap(SoapVersion::Soap12);
        assert_eq!(v12.code.local, "Receiver");
        assert_eq!(v12.subcodes[0].local, "InternalServiceFault");
        let v11 = f.to_soap(SoapVersion::Soap11);
        assert_eq!(
            v11.code,
            QName::new("a", DISPATCHER_NS, "InternalServiceFault")
        );
        assert!(v11.subcodes.is_empty());
        assert_eq!(
            f.reply_action(),
            "http://schemas.microsoft.com/net/2005/12/windowscommunicationfoundation/dispatcher/fault"
        );
    }
}
