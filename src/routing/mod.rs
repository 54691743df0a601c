//! Routes, as pure functions: which route a request takes ([`table`]),
//! what a route changes on the way ([`filters`]), and which of a route's
//! weighted backends gets it ([`split`]). Shared by `outbound.routes` and
//! `gateway.routes`; the sending is the outbound side's.
//!
//! Precedence, first that applies:
//!
//! 1. routes for the request's host (port-specific before any-port), then
//!    the service names (`NAME`, `NAME.NS`, `NAME.NS.svc`,
//!    `NAME.NS.svc.cluster.local`), then routes for any host (`*`);
//! 2. an `exact` path before a prefix or pattern;
//! 3. the longer path (a prefix's length, or a pattern's literal length);
//! 4. a method match before none;
//! 5. more header matches, then more query parameter matches;
//! 6. file order.

pub mod filters;
pub mod split;
pub mod table;

pub use table::{Matched, RouteRef, RouteTable, Target};
