//! The push install of the Mobility service, and the path replication takes: the run-as
//! account (error 95107 for Windows, 95108 for Linux), the security-group rules that let the
//! process server reach the machine (error 95117: SMB 445 and WMI 135 for Windows, SSH 22 for
//! Linux), and the machine reaching the process server on 443 and 9443.
//!
//! Ids and wording from `vmware-azure-troubleshoot-push-install.md` (2019): "Credentials check
//! (ErrorID: 95107 & 95108)" and "Connectivity failure (ErrorID: 95117 & 97118)". Inside the
//! guest the same ports fail as 95105/95106 (File and Printer Sharing) and 95103 (WMI); here
//! only the security groups are seen, which is 95117's "source machine is not reachable".

use super::{CheckResult, IngressRule, MachineFacts, PushAccount, and_list};
use crate::site::support::OsType;
use std::net::IpAddr;

/// The push-install account can install the Mobility service.
pub const ACCOUNT: &str = "push-install-account";
/// The security groups let the process server reach the machine.
pub const PORTS: &str = "push-install-ports";
/// The machine reaches the process server on 443 and 9443.
pub const PROCESS_SERVER: &str = "process-server-ports";

/// Error 95107: the Windows account lacks administrator rights (push-install troubleshooting).
const WINDOWS_CREDENTIALS: u32 = 95107;
/// Error 95108: the Linux account is not root (same page).
const LINUX_CREDENTIALS: u32 = 95108;
/// Error 95117: the source machine is not reachable (same page).
const UNREACHABLE: u32 = 95117;

const WINDOWS_ACTION: &str = "Use an account with administrator rights on the machine. If you \
    are not using a domain account, disable Remote User Access control: under \
    HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Policies\\System add the \
    DWORD LocalAccountTokenFilterPolicy and set it to 1 (REG ADD \
    HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Policies\\System /v \
    LocalAccountTokenFilterPolicy /t REG_DWORD /d 1).";
const LINUX_ACTION: &str = "Choose the root account for the push install. SFTP must be \
    running: in /etc/ssh/sshd_config set PasswordAuthentication yes, uncomment the Subsystem \
    line, and restart sshd.";
const CREDENTIALS_CAUSE: &str = "Azure Site Recovery requires the ROOT account or a user \
    account with administrator privileges to perform the push installation; otherwise push \
    installation is blocked on the source machine.";

pub(super) fn account(f: &MachineFacts) -> CheckResult {
    let (id, action) = match f.os_type {
        OsType::Windows => (WINDOWS_CREDENTIALS, WINDOWS_ACTION),
        OsType::Linux => (LINUX_CREDENTIALS, LINUX_ACTION),
    };
    let fail = |why: String| CheckResult::failed(ACCOUNT, Some(id), why, CREDENTIALS_CAUSE, action);
    let os = f.os_type.as_str();
    match (&f.account, f.os_type) {
        (None, _) => fail(format!(
            "no run-as account was chosen for the push install; the push install to a {os} \
             machine needs {}",
            match f.os_type {
                OsType::Windows => "an account with administrator rights",
                OsType::Linux => "the root account",
            }
        )),
        (Some(PushAccount::Linux { user, is_root }), OsType::Linux) => {
            if *is_root {
                CheckResult::passed(ACCOUNT, format!("the push install uses root ({user:?})"))
            } else {
                fail(format!(
                    "the push-install account {user:?} is not root; the push install to a \
                     Linux machine needs the root account"
                ))
            }
        }
        (
            Some(PushAccount::Windows {
                user,
                domain,
                is_admin,
                local_account_token_filter_policy,
            }),
            OsType::Windows,
        ) => {
            let who = match domain {
                Some(d) => format!("the domain account \"{d}\\{user}\""),
                None => format!("the local account {user:?}"),
            };
            if !is_admin {
                fail(format!(
                    "{who} has no administrator rights on the machine; the push install needs \
                     an account with administrator rights, local or domain"
                ))
            } else if domain.is_none() && !local_account_token_filter_policy {
                fail(format!(
                    "{who} is used while LocalAccountTokenFilterPolicy is not set to 1; a \
                     local account needs Remote User Access control disabled \
                     (LocalAccountTokenFilterPolicy = 1)"
                ))
            } else {
                CheckResult::passed(
                    ACCOUNT,
                    format!("the push install uses {who}, with administrator rights"),
                )
            }
        }
        (Some(a), _) => {
            let (kind, user) = match a {
                PushAccount::Linux { user, .. } => ("a Linux", user),
                PushAccount::Windows { user, .. } => ("a Windows", user),
            };
            fail(format!(
                "{kind} account ({user:?}) was chosen for the push install to a {os} machine; \
                 it needs a {os} account"
            ))
        }
    }
}

/// Whether `cidr` (`10.0.0.0/16`, `2001:db8::/32`, or one address) holds `ip`; `None` when it
/// is not a CIDR.
fn cidr_contains(cidr: &str, ip: IpAddr) -> Option<bool> {
    let (addr, len) = match cidr.trim().split_once('/') {
        Some((a, l)) => (a, Some(l.parse::<u32>().ok()?)),
        None => (cidr.trim(), None),
    };
    let net: IpAddr = addr.parse().ok()?;
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let len = len.unwrap_or(32);
            if len > 32 {
                return None;
            }
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            Some(u32::from(n) & mask == u32::from(i) & mask)
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let len = len.unwrap_or(128);
            if len > 128 {
                return None;
            }
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            Some(u128::from(n) & mask == u128::from(i) & mask)
        }
        // A v4 range never holds a v6 address and the other way round.
        _ => Some(false),
    }
}

/// Whether the rule's protocol covers TCP.
fn is_tcp(rule: &IngressRule) -> bool {
    matches!(
        rule.protocol.trim().to_ascii_lowercase().as_str(),
        "tcp" | "6" | "-1" | "all"
    )
}

/// Whether the rule covers every port (protocol `-1`, or no ports given).
fn all_ports(rule: &IngressRule) -> bool {
    rule.protocol.trim() == "-1" || (rule.from_port.is_none() && rule.to_port.is_none())
}

/// Whether the rule admits TCP `port` from `ip`.
fn admits(rule: &IngressRule, port: u16, ip: IpAddr) -> bool {
    let from_ip = rule
        .sources
        .iter()
        .any(|c| cidr_contains(c, ip) == Some(true));
    let port_ok = all_ports(rule) || {
        let p = i32::from(port);
        let lo = rule.from_port.unwrap_or(0);
        let hi = rule.to_port.unwrap_or(lo);
        (lo..=hi).contains(&p)
    };
    from_ip && is_tcp(rule) && port_ok
}

/// A rule as a person reads it: `tcp 3389`, `tcp 1024-2048`, `all traffic`.
fn describe(rule: &IngressRule) -> String {
    if rule.protocol.trim() == "-1" {
        return "all traffic".into();
    }
    match (rule.from_port, rule.to_port) {
        (Some(a), Some(b)) if a == b => format!("{} {a}", rule.protocol),
        (Some(a), Some(b)) => format!("{} {a}-{b}", rule.protocol),
        (Some(a), None) | (None, Some(a)) => format!("{} {a}", rule.protocol),
        (None, None) => format!("{} (every port)", rule.protocol),
    }
}

pub(super) fn ports(f: &MachineFacts) -> CheckResult {
    let ip = f.network.process_server_ip;
    let needed: &[(u16, &str)] = match f.os_type {
        OsType::Windows => &[(445, "SMB"), (135, "WMI")],
        OsType::Linux => &[(22, "SSH")],
    };
    let show = |p: &[(u16, &str)]| -> String {
        let v: Vec<String> = p
            .iter()
            .map(|(n, what)| format!("TCP {n} ({what})"))
            .collect();
        and_list(&v)
    };
    let missing: Vec<(u16, &str)> = needed
        .iter()
        .copied()
        .filter(|(p, _)| !f.network.ingress.iter().any(|r| admits(r, *p, ip)))
        .collect();
    if missing.is_empty() {
        return CheckResult::passed(
            PORTS,
            format!(
                "the security groups allow {} from the process server {ip}",
                show(needed)
            ),
        );
    }
    let from_ps: Vec<String> = f
        .network
        .ingress
        .iter()
        .filter(|r| r.sources.iter().any(|c| cidr_contains(c, ip) == Some(true)))
        .map(describe)
        .collect();
    let found = if from_ps.is_empty() {
        format!("no rule admits traffic from {ip}")
    } else {
        format!("from {ip} they allow only {}", and_list(&from_ps))
    };
    CheckResult::failed(
        PORTS,
        Some(UNREACHABLE),
        format!(
            "the security groups do not allow {} from the process server {ip} ({found}); the \
             push install to a {} machine needs {} open",
            show(&missing),
            f.os_type.as_str(),
            show(needed)
        ),
        "The source machine is not reachable from the configuration server / process server \
         because of network connectivity issues or firewall port blocking: the process server \
         connects to the machine to copy and install the Mobility service.",
        match f.os_type {
            OsType::Windows => {
                "Add inbound rules to the machine's security group for TCP 445 (File and \
                 Printer Sharing) and TCP 135 (WMI) from the process server's address, and \
                 retry."
            }
            OsType::Linux => {
                "Add an inbound rule to the machine's security group for TCP 22 (SSH) from the \
                 process server's address; ensure SSH is enabled and running on port 22, and \
                 retry."
            }
        },
    )
}

pub(super) fn process_server(f: &MachineFacts) -> CheckResult {
    // Site Recovery reports no error id for this in its troubleshooting pages; they give the
    // test (`telnet <process server IP address> 9443`) and the fix (allow inbound 9443).
    let n = &f.network;
    let ip = n.process_server_ip;
    let mut blocked = Vec::new();
    if !n.process_server_reachable_443 {
        blocked.push("443".to_string());
    }
    if !n.process_server_reachable_9443 {
        blocked.push("9443".to_string());
    }
    if blocked.is_empty() {
        return CheckResult::passed(
            PROCESS_SERVER,
            format!("the machine reaches the process server {ip} on 443 and 9443"),
        );
    }
    CheckResult::failed(
        PROCESS_SERVER,
        None,
        format!(
            "the machine cannot reach the process server {ip} on port {}; replication needs \
             443 (HTTPS orchestration) and 9443 (replication data)",
            and_list(&blocked)
        ),
        "A firewall, security group or network ACL between the machine and the process \
         server blocks the port.",
        "Allow inbound 443 and 9443 on the process server from the machine (test with \
         `telnet <process server IP address> 9443`), and retry.",
    )
}

#[cfg(test)]
mod tests {
    use super::super::Outcome;
    use super::super::fixtures::{rhel, windows};
    use super::*;

    #[test]
    fn a_windows_account_needs_admin_rights_and_the_token_policy() {
        let mut f = windows();
        let set = |f: &mut MachineFacts, domain: Option<&str>, admin: bool, latfp: bool| {
            f.account = Some(PushAccount::Windows {
                user: "migrator".into(),
                domain: domain.map(str::to_string),
                is_admin: admin,
                local_account_token_filter_policy: latfp,
            });
        };
        set(&mut f, None, true, false);
        let r = account(&f);
        assert_eq!((r.outcome, r.error_id), (Outcome::Failed, Some(95107)));
        assert_eq!(
            r.message,
            "the local account \"migrator\" is used while LocalAccountTokenFilterPolicy is not set \
             to 1; a local account needs Remote User Access control disabled \
             (LocalAccountTokenFilterPolicy = 1)"
        );
        assert!(
            r.recommended_action
                .contains("LocalAccountTokenFilterPolicy /t REG_DWORD /d 1")
        );
        set(&mut f, Some("CORP"), false, false);
        let r = account(&f);
        assert_eq!(r.error_id, Some(95107));
        assert!(
            r.message
                .starts_with("the domain account \"CORP\\migrator\" has no administrator rights"),
            "{}",
            r.message
        );
        set(&mut f, Some("CORP"), true, false);
        assert_eq!(
            account(&f).outcome,
            Outcome::Passed,
            "a domain admin needs no policy"
        );
        set(&mut f, None, true, true);
        assert_eq!(account(&f).outcome, Outcome::Passed);
        f.account = None;
        assert_eq!(account(&f).error_id, Some(95107));
    }

    #[test]
    fn a_linux_account_must_be_root() {
        let mut f = rhel();
        f.account = Some(PushAccount::Linux {
            user: "ec2-user".into(),
            is_root: false,
        });
        let r = account(&f);
        assert_eq!((r.outcome, r.error_id), (Outcome::Failed, Some(95108)));
        assert_eq!(
            r.message,
            "the push-install account \"ec2-user\" is not root; the push install to a Linux \
             machine needs the root account"
        );
        // A Windows account for a Linux machine.
        f.account = windows().account;
        let r = account(&f);
        assert_eq!(r.error_id, Some(95108));
        assert!(r.message.starts_with("a Windows account"), "{}", r.message);
    }

    #[test]
    fn windows_needs_smb_and_wmi_from_the_process_server() {
        let mut f = windows();
        f.network.ingress = vec![IngressRule {
            protocol: "tcp".into(),
            from_port: Some(3389),
            to_port: Some(3389),
            sources: vec!["0.0.0.0/0".into()],
        }];
        let r = ports(&f);
        assert_eq!((r.outcome, r.error_id), (Outcome::Failed, Some(95117)));
        assert_eq!(
            r.message,
            "the security groups do not allow TCP 445 (SMB) and TCP 135 (WMI) from the process \
             server 172.31.0.10 (from 172.31.0.10 they allow only tcp 3389); the push install to \
             a Windows machine needs TCP 445 (SMB) and TCP 135 (WMI) open"
        );
        // 445 from a range that holds the process server, 135 from elsewhere.
        f.network.ingress = vec![
            IngressRule {
                protocol: "6".into(),
                from_port: Some(400),
                to_port: Some(500),
                sources: vec!["172.31.0.0/16".into()],
            },
            IngressRule {
                protocol: "tcp".into(),
                from_port: Some(135),
                to_port: Some(135),
                sources: vec!["10.0.0.0/8".into()],
            },
        ];
        let r = ports(&f);
        assert!(
            r.message
                .starts_with("the security groups do not allow TCP 135 (WMI) from"),
            "{}",
            r.message
        );
        // All traffic from the process server's own address.
        f.network.ingress = vec![IngressRule {
            protocol: "-1".into(),
            from_port: None,
            to_port: None,
            sources: vec!["172.31.0.10/32".into()],
        }];
        assert_eq!(ports(&f).outcome, Outcome::Passed);
        // UDP does not count.
        f.network.ingress[0].protocol = "udp".into();
        assert_eq!(ports(&f).outcome, Outcome::Failed);
    }

    #[test]
    fn linux_needs_ssh_from_the_process_server() {
        let mut f = rhel();
        f.network.ingress.clear();
        let r = ports(&f);
        assert_eq!(r.error_id, Some(95117));
        assert_eq!(
            r.message,
            "the security groups do not allow TCP 22 (SSH) from the process server 172.31.0.10 \
             (no rule admits traffic from 172.31.0.10); the push install to a Linux machine \
             needs TCP 22 (SSH) open"
        );
    }

    #[test]
    fn cidrs() {
        let ip: IpAddr = "172.31.0.10".parse().unwrap();
        assert_eq!(cidr_contains("172.31.0.0/16", ip), Some(true));
        assert_eq!(cidr_contains("172.32.0.0/16", ip), Some(false));
        assert_eq!(cidr_contains("0.0.0.0/0", ip), Some(true));
        assert_eq!(cidr_contains("172.31.0.10", ip), Some(true));
        assert_eq!(cidr_contains("172.31.0.11/32", ip), Some(false));
        assert_eq!(cidr_contains("172.31.0.0/33", ip), None);
        assert_eq!(cidr_contains("nonsense", ip), None);
        assert_eq!(cidr_contains("::/0", ip), Some(false));
        let v6: IpAddr = "2001:db8::5".parse().unwrap();
        assert_eq!(cidr_contains("2001:db8::/32", v6), Some(true));
        assert_eq!(cidr_contains("::/0", v6), Some(true));
    }

    #[test]
    fn the_process_server_must_be_reachable_on_443_and_9443() {
        let mut f = windows();
        f.network.process_server_reachable_9443 = false;
        let r = process_server(&f);
        assert_eq!((r.outcome, r.error_id), (Outcome::Failed, None));
        assert_eq!(
            r.message,
            "the machine cannot reach the process server 172.31.0.10 on port 9443; replication \
             needs 443 (HTTPS orchestration) and 9443 (replication data)"
        );
        f.network.process_server_reachable_443 = false;
        assert!(process_server(&f).message.contains("on port 443 and 9443;"));
    }
}
