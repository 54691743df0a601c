//! `pilotfish demo` (being written).
