//! The interop calculator (`wsdl/calculator`, the generated [`Calculator`] contract)
//! implemented in Rust with the behaviour of the Mono service in the recordings
//! (`interop/recordings/README.md`), so that WCF clients see the same answers from either:
//!
//! - `Add` wraps on overflow (C#'s default `unchecked` arithmetic): `int.MaxValue + 1` is
//!   `int.MinValue`;
//! - `Divide` is IEEE division (`1/0` is infinity, `0/0` NaN);
//! - `Echo` answers `"echo:" + text`, and nil stays nil;
//! - `ReverseBytes` reverses the array;
//! - `SubmitOrder` summarises the order: customer and city upper-cased (one character for
//!   one, as .NET's `ToUpper` does: `ß` stays `ß`), line count, total quantity, total price
//!   summed in line order, the SKUs, and reference, creation time and express flag copied;
//! - one-way `Notify` stores its message and `GetNotifications` drains them (one store for
//!   every session and request, as the recorded service's static list);
//! - `SafeDivide` by zero is the typed fault `CalcFault { Operation: "SafeDivide",
//!   ProblemType: "Division by zero", Code: 4242 }` with reason "Cannot divide by zero" and
//!   code `DivideByZero` in the service namespace;
//! - `Fail` is an untyped fault with the given reason (what .NET sends for `throw new
//!   FaultException(reason)`; Mono replaces it with its generic internal fault);
//! - `Crash` is an unhandled error: the operation panics, which a host answers with WCF's
//!   generic `InternalServiceFault` ([`Fault::internal_error`]). So does `SafeDivide` of
//!   `int.MinValue` by -1, whose overflow .NET throws as an exception too.
//!
//! [`metadata`] is its WSDL and XSDs as the recorded service published them
//! (`wsdl/calculator`, embedded at compile time) with the `[FaultContract]` Mono leaves out
//! (`faults.wsdl`) merged in, for a host to serve.

use std::sync::{Mutex, PoisonError};

use ferry_soap::QName;

use crate::fault::{Fault, FaultCode};
use crate::generated::calculator::{
    Add, AddResponse, Address, CalcFault, Calculator, Crash, CrashResponse, Divide, DivideResponse,
    Echo, EchoResponse, Fail, FailResponse, GetNotifications, GetNotificationsResponse, Notify,
    ReverseBytes, ReverseBytesResponse, SafeDivide, SafeDivideFault, SafeDivideResponse,
    SubmitOrder, SubmitOrderResponse,
};
use crate::metadata::Metadata;

/// The service namespace, which the `DivideByZero` fault code lives in.
pub const SERVICE_NS: &str = "http://interop.example/calc/2024";
/// The reason of the `SafeDivide` fault.
pub const DIVIDE_BY_ZERO_REASON: &str = "Cannot divide by zero";
/// The `Code` member of the `SafeDivide` fault's detail.
pub const DIVIDE_BY_ZERO_CODE: i32 = 4242;
/// Most notifications kept until `GetNotifications` drains them; older ones are dropped.
pub const MAX_NOTIFICATIONS: usize = 1024;

/// The calculator service. Its notification store is shared by every session.
#[derive(Debug, Default)]
pub struct Calc {
    notifications: Mutex<Vec<Option<String>>>,
}

impl Calc {
    /// A calculator with no stored notifications.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Calculator for Calc {
    async fn add(&self, r: Add) -> Result<AddResponse, Fault> {
        Ok(AddResponse {
            add_result: r.a.wrapping_add(r.b),
        })
    }

    async fn divide(&self, r: Divide) -> Result<DivideResponse, Fault> {
        Ok(DivideResponse {
            divide_result: r.a / r.b,
        })
    }

    async fn echo(&self, r: Echo) -> Result<EchoResponse, Fault> {
        Ok(EchoResponse {
            echo_result: r.text.map(|t| format!("echo:{t}")),
        })
    }

    async fn reverse_bytes(&self, r: ReverseBytes) -> Result<ReverseBytesResponse, Fault> {
        let mut data = r.data;
        data.reverse();
        Ok(ReverseBytesResponse {
            reverse_bytes_result: data,
        })
    }

    async fn submit_order(&self, r: SubmitOrder) -> Result<SubmitOrderResponse, Fault> {
        let order = r.order;
        let lines: Vec<_> = order.lines.iter().flatten().flatten().collect();
        let summary = crate::generated::calculator::OrderSummary {
            order_id: order.id,
            customer_upper: order.customer.as_deref().map(upper),
            line_count: i32::try_from(lines.len()).unwrap_or(i32::MAX),
            total_quantity: lines.iter().fold(0i32, |t, l| t.wrapping_add(l.quantity)),
            total: lines
                .iter()
                .fold(0.0, |t, l| t + f64::from(l.quantity) * l.unit_price),
            skus: Some(lines.iter().map(|l| l.sku.clone()).collect()),
            ship_to: order.ship_to.map(|a| Address {
                city: a.city.as_deref().map(upper),
                ..a
            }),
            reference: order.reference,
            created: order.created,
            express: order.express,
        };
        Ok(SubmitOrderResponse {
            submit_order_result: summary,
        })
    }

    async fn notify(&self, r: Notify) {
        let mut store = self
            .notifications
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if store.len() == MAX_NOTIFICATIONS {
            store.remove(0);
        }
        store.push(r.message);
    }

    async fn get_notifications(
        &self,
        _: GetNotifications,
    ) -> Result<GetNotificationsResponse, Fault> {
        let drained = std::mem::take(
            &mut *self
                .notifications
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        Ok(GetNotificationsResponse {
            get_notifications_result: drained,
        })
    }

    async fn safe_divide(
        &self,
        r: SafeDivide,
    ) -> Result<SafeDivideResponse, Fault<SafeDivideFault>> {
        if r.b == 0 {
            let detail = CalcFault {
                operation: Some("SafeDivide".into()),
                problem_type: Some("Division by zero".into()),
                code: DIVIDE_BY_ZERO_CODE,
            };
            let mut fault =
                Fault::with_detail(DIVIDE_BY_ZERO_REASON, SafeDivideFault::CalcFault(detail));
            fault.code = FaultCode::Other(QName::new("a", SERVICE_NS, "DivideByZero"));
            return Err(fault);
        }
        // `int.MinValue / -1` overflows: .NET throws, and so does this (a panic the host
        // answers with the generic internal fault).
        Ok(SafeDivideResponse {
            safe_divide_result: r.a / r.b,
        })
    }

    async fn fail(&self, r: Fail) -> Result<FailResponse, Fault> {
        Err(Fault::sender(r.reason.unwrap_or_default()))
    }

    async fn crash(&self, _: Crash) -> Result<CrashResponse, Fault> {
        // The unhandled exception of the recorded service (InvalidOperationException).
        panic!("Crash was called: an unhandled error, by design");
    }
}

/// The calculator's metadata documents, as [`Metadata`] to serve: the recorded service's
/// `?wsdl` (the one with the `wsdl:service`), `?wsdl=wsdl0` and `?xsd=xsd0` to `xsd3`, plus
/// `faults.wsdl`. Set the public bases ([`Metadata::set_public_base`]) before serving it.
pub fn metadata() -> Metadata {
    const WSDLS: [&str; 2] = [
        include_str!("../../../wsdl/calculator/calc.wsdl"),
        include_str!("../../../wsdl/calculator/calc.wsdl0.wsdl"),
    ];
    const SCHEMAS: [&str; 4] = [
        include_str!("../../../wsdl/calculator/calc.xsd0.xsd"),
        include_str!("../../../wsdl/calculator/calc.xsd1.xsd"),
        include_str!("../../../wsdl/calculator/calc.xsd2.xsd"),
        include_str!("../../../wsdl/calculator/calc.xsd3.xsd"),
    ];
    const FAULTS: &str = include_str!("../../../wsdl/calculator/faults.wsdl");
    let mut metadata = Metadata::new(&WSDLS, &SCHEMAS)
        // Checked-in documents, parsed by the unit tests: they cannot fail here.
        .expect("the checked-in calculator metadata parses");
    metadata
        .supplement(FAULTS)
        .expect("faults.wsdl matches the checked-in calculator metadata");
    metadata
}

/// Upper case, one character for one (characters whose upper case is longer, like `ß`,
/// stay), as .NET's `String.ToUpper`.
fn upper(s: &str) -> String {
    s.chars()
        .map(|c| {
            let mut u = c.to_uppercase();
            match (u.next(), u.next()) {
                (Some(one), None) => one,
                _ => c,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checked_in_metadata_is_served() {
        let m = metadata();
        assert_eq!(m.service_name(), "service");
        assert!(
            m.page("wsdl", Some("h"), "/calc")
                .body
                .contains("wsdl:definitions")
        );
    }

    #[test]
    fn upper_case_is_one_for_one() {
        assert_eq!(upper("Zoë Müller"), "ZOË MÜLLER");
        assert_eq!(upper("Hauptstraße"), "HAUPTSTRAßE");
    }
}
