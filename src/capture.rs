//! `pilotfish capture`: the iptables rules that send a pod's TCP through
//! its sidecar, as `istio-init` and `linkerd-init` install them. Run once
//! per pod, as root with `NET_ADMIN`, in the pod's network namespace,
//! before the app starts (Kubernetes: an init container).
//!
//! - **Outbound**: the app's TCP connections go to the outbound listener,
//!   which reads each one's original destination (`SO_ORIGINAL_DST`) and
//!   tells its protocol by its first bytes (`detect`). The sidecar's own
//!   connections (its UID) and those to loopback are left alone, so
//!   nothing loops.
//! - **Inbound**: TCP arriving at the pod goes to the mTLS listener. A
//!   caller outside the mesh, speaking plaintext, is refused there (strict,
//!   as Istio's STRICT); a port listed as permissive is not captured, and
//!   reaches the app as it came.
//!
//! The rules live in two chains of the `nat` table, `PILOTFISH_OUTPUT` and
//! `PILOTFISH_INBOUND`, jumped to from `OUTPUT` and `PREROUTING`.
//! Installing replaces the chains' rules and adds each jump only if it is
//! missing, so running it again changes nothing; `remove` deletes both.

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Command, Stdio};

/// The chain the app's outgoing connections pass through.
pub const OUTPUT_CHAIN: &str = "PILOTFISH_OUTPUT";
/// The chain connections to the pod pass through.
pub const INBOUND_CHAIN: &str = "PILOTFISH_INBOUND";

/// What to capture and where to send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    /// The UID the sidecar runs as: its own connections are not captured.
    pub proxy_uid: u32,
    /// The outbound listener's port (`outbound.listen`).
    pub outbound_port: u16,
    /// The mTLS listener's port (`inbound.listen`).
    pub inbound_port: u16,
    /// Destination ports of outgoing connections left alone.
    pub skip_outbound_ports: Vec<u16>,
    /// Ports of the pod not captured: the admin port (probes, scraping),
    /// and permissive ports whose plaintext reaches the app directly.
    pub skip_inbound_ports: Vec<u16>,
}

impl Capture {
    /// The `iptables-restore` input that fills both chains (declaring a
    /// chain empties it, so this replaces earlier rules).
    pub fn ruleset(&self) -> String {
        let mut rules = String::from("*nat\n");
        let _ = writeln!(rules, ":{INBOUND_CHAIN} - [0:0]");
        let _ = writeln!(rules, ":{OUTPUT_CHAIN} - [0:0]");

        // Inbound: the mTLS listener itself, then the skipped ports, pass;
        // everything else is redirected to the mTLS listener.
        let mut passed = vec![self.inbound_port];
        passed.extend(&self.skip_inbound_ports);
        passed.sort_unstable();
        passed.dedup();
        for port in passed {
            let _ = writeln!(rules, "-A {INBOUND_CHAIN} -p tcp --dport {port} -j RETURN");
        }
        let _ = writeln!(
            rules,
            "-A {INBOUND_CHAIN} -p tcp -j REDIRECT --to-ports {}",
            self.inbound_port
        );

        // Outbound: the sidecar's own connections, anything to loopback
        // (the app calling its sidecar, or itself on 127.0.0.1), and
        // skipped ports pass. (A call to the pod's own address is captured
        // like any other and routed by the sidecar.)
        let _ = writeln!(
            rules,
            "-A {OUTPUT_CHAIN} -m owner --uid-owner {} -j RETURN",
            self.proxy_uid
        );
        let _ = writeln!(rules, "-A {OUTPUT_CHAIN} -d 127.0.0.0/8 -j RETURN");
        let mut skipped = self.skip_outbound_ports.clone();
        skipped.sort_unstable();
        skipped.dedup();
        for port in skipped {
            let _ = writeln!(rules, "-A {OUTPUT_CHAIN} -p tcp --dport {port} -j RETURN");
        }
        let _ = writeln!(
            rules,
            "-A {OUTPUT_CHAIN} -p tcp -j REDIRECT --to-ports {}",
            self.outbound_port
        );
        rules.push_str("COMMIT\n");
        rules
    }
}

/// The jumps into the chains: (built-in chain, rule).
const JUMPS: [(&str, &str); 2] = [("PREROUTING", INBOUND_CHAIN), ("OUTPUT", OUTPUT_CHAIN)];

/// Why installing or removing failed.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The tool could not be started.
    #[error("cannot run {tool}: {source} (capture needs iptables, and root with NET_ADMIN)")]
    Spawn {
        /// The program.
        tool: String,
        /// Why.
        source: std::io::Error,
    },
    /// The tool ran and refused.
    #[error("{command} failed: {stderr}")]
    Failed {
        /// What was run.
        command: String,
        /// What it said.
        stderr: String,
    },
}

/// Installs `capture` with the iptables of `iptables` (a program name or
/// path; its `-restore` sibling is used for the rules).
pub fn install(capture: &Capture, iptables: &str) -> Result<(), CaptureError> {
    restore(iptables, &capture.ruleset())?;
    for (builtin, chain) in JUMPS {
        let rule = ["-t", "nat", "-C", builtin, "-p", "tcp", "-j", chain];
        if run(iptables, &rule).is_err() {
            run(
                iptables,
                &["-t", "nat", "-A", builtin, "-p", "tcp", "-j", chain],
            )?;
        }
    }
    Ok(())
}

/// Removes what [`install`] added; rules that are not there are fine.
pub fn remove(iptables: &str) -> Result<(), CaptureError> {
    for (builtin, chain) in JUMPS {
        while run(
            iptables,
            &["-t", "nat", "-C", builtin, "-p", "tcp", "-j", chain],
        )
        .is_ok()
        {
            run(
                iptables,
                &["-t", "nat", "-D", builtin, "-p", "tcp", "-j", chain],
            )?;
        }
    }
    for (_, chain) in JUMPS {
        if run(iptables, &["-t", "nat", "-L", chain, "-n"]).is_ok() {
            run(iptables, &["-t", "nat", "-F", chain])?;
            run(iptables, &["-t", "nat", "-X", chain])?;
        }
    }
    Ok(())
}

/// `iptables-restore --noflush` with `rules` on its input: only the
/// chains it declares change, atomically.
fn restore(iptables: &str, rules: &str) -> Result<(), CaptureError> {
    let tool = format!("{iptables}-restore");
    let mut child = Command::new(&tool)
        .arg("--noflush")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| CaptureError::Spawn {
            tool: tool.clone(),
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A write error shows as the tool's failure below.
        let _ = stdin.write_all(rules.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|source| CaptureError::Spawn {
            tool: tool.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(CaptureError::Failed {
            command: format!("{tool} --noflush"),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

fn run(tool: &str, args: &[&str]) -> Result<(), CaptureError> {
    let out = Command::new(tool)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| CaptureError::Spawn {
            tool: tool.to_owned(),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(CaptureError::Failed {
            command: format!("{tool} {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture() -> Capture {
        Capture {
            proxy_uid: 2102,
            outbound_port: 15001,
            inbound_port: 15006,
            skip_outbound_ports: vec![53, 53],
            skip_inbound_ports: vec![9901],
        }
    }

    #[test]
    fn the_ruleset_captures_all_tcp_but_the_proxys_own_loopback_and_skipped_ports() {
        assert_eq!(
            capture().ruleset(),
            "*nat\n\
             :PILOTFISH_INBOUND - [0:0]\n\
             :PILOTFISH_OUTPUT - [0:0]\n\
             -A PILOTFISH_INBOUND -p tcp --dport 9901 -j RETURN\n\
             -A PILOTFISH_INBOUND -p tcp --dport 15006 -j RETURN\n\
             -A PILOTFISH_INBOUND -p tcp -j REDIRECT --to-ports 15006\n\
             -A PILOTFISH_OUTPUT -m owner --uid-owner 2102 -j RETURN\n\
             -A PILOTFISH_OUTPUT -d 127.0.0.0/8 -j RETURN\n\
             -A PILOTFISH_OUTPUT -p tcp --dport 53 -j RETURN\n\
             -A PILOTFISH_OUTPUT -p tcp -j REDIRECT --to-ports 15001\n\
             COMMIT\n"
        );
    }
}
