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

        // Inbound: the mTLS listener itself and the skipped ports pass;
        // everything else goes to the mTLS listener.
        let mut passed = vec![self.inbound_port];
        passed.extend(&self.skip_inbound_ports);
        chain(&mut rules, INBOUND_CHAIN, &[], passed, self.inbound_port);
        // Outbound: the sidecar's own connections, anything to loopback
        // (the app calling its sidecar, or itself on 127.0.0.1), and
        // skipped ports pass. (A call to the pod's own address is captured
        // like any other and routed by the sidecar.)
        let own = format!("-m owner --uid-owner {}", self.proxy_uid);
        let exempt = [own.as_str(), "-d 127.0.0.0/8"];
        let skipped = self.skip_outbound_ports.clone();
        chain(
            &mut rules,
            OUTPUT_CHAIN,
            &exempt,
            skipped,
            self.outbound_port,
        );
        rules.push_str("COMMIT\n");
        rules
    }
}

/// Appends the rules of `chain`: a RETURN for each match of `exempt`,
/// then one for each of `ports` (once each, in order), then the redirect
/// of the rest of its TCP to port `to`.
fn chain(rules: &mut String, chain: &str, exempt: &[&str], mut ports: Vec<u16>, to: u16) {
    for matches in exempt {
        let _ = writeln!(rules, "-A {chain} {matches} -j RETURN");
    }
    ports.sort_unstable();
    ports.dedup();
    for port in ports {
        let _ = writeln!(rules, "-A {chain} -p tcp --dport {port} -j RETURN");
    }
    let _ = writeln!(rules, "-A {chain} -p tcp -j REDIRECT --to-ports {to}");
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
    finished(format!("{tool} --noflush"), &out)
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
    finished(format!("{tool} {}", args.join(" ")), &out)
}

/// `command`'s exit: fine, or a failure with what it said.
fn finished(command: String, out: &std::process::Output) -> Result<(), CaptureError> {
    if out.status.success() {
        return Ok(());
    }
    Err(CaptureError::Failed {
        command,
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    })
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
