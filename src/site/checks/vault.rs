//! The vault side: the registration key that registers the configuration server ("The key is
//! valid for five days after you generate it", tutorial-vmware-to-azure.md, 2017), and the
//! replication policy's association with the configuration server (error 78253, "Protection
//! couldn't be successfully enabled for the virtual machine",
//! vmware-azure-troubleshoot-replication.md).

use super::{CheckResult, SiteFacts};
use crate::clock::{format_duration, format_time};

/// The configuration server is registered (or can be, with an unexpired key).
pub const REGISTRATION_KEY: &str = "registration-key";
/// The replication policy is associated with the configuration server.
pub const POLICY: &str = "policy-association";

/// How long a vault registration key is valid: five days.
pub const REGISTRATION_KEY_VALIDITY_MS: u64 = 5 * 24 * 3_600_000;

/// Error 78253 (replication troubleshooting page).
const POLICY_NOT_ASSOCIATED: u32 = 78253;

pub(super) fn registration_key(s: &SiteFacts) -> CheckResult {
    let now = format_time(s.now_ms);
    if s.configuration_server_registered {
        // Once registered, the key is spent: its expiry no longer matters.
        return CheckResult::passed(
            REGISTRATION_KEY,
            "the configuration server is registered with the vault",
        );
    }
    let action = "Download a new registration key from the vault (Prepare infrastructure > \
        Source) and register the configuration server with it within five days.";
    match s.registration_key_expires_ms {
        None => CheckResult::failed(
            REGISTRATION_KEY,
            None,
            format!(
                "no configuration server is registered and the vault has issued no registration \
                 key (now {now}); a configuration server registers with a key valid for five days"
            ),
            "The configuration server has not been set up with the vault's registration key.",
            action,
        ),
        Some(exp) if exp <= s.now_ms => CheckResult::failed(
            REGISTRATION_KEY,
            None,
            format!(
                "the vault registration key expired at {} ({} ago, now {now}) before a \
                 configuration server registered with it; keys are valid for five days",
                format_time(exp),
                format_duration(s.now_ms - exp)
            ),
            "The registration key is valid for five days after it is generated.",
            action,
        ),
        Some(exp) => CheckResult::failed(
            REGISTRATION_KEY,
            None,
            format!(
                "no configuration server is registered with the vault yet; its registration key \
                 is valid until {} ({} from now)",
                format_time(exp),
                format_duration(exp - s.now_ms)
            ),
            "The configuration server has not been registered with the vault.",
            "Register the configuration server with the vault's registration key before it \
             expires.",
        ),
    }
}

pub(super) fn policy(s: &SiteFacts) -> CheckResult {
    if s.policy_associated {
        return CheckResult::passed(
            POLICY,
            "the replication policy is associated with the configuration server",
        );
    }
    CheckResult::failed(
        POLICY,
        Some(POLICY_NOT_ASSOCIATED),
        "Protection couldn't be successfully enabled for the virtual machine: no replication \
         policy is associated with the configuration server (no protection container mapping); \
         one is needed to enable replication",
        "This error may occur if a replication policy has not been associated with the \
         configuration server properly. It could also occur if the policy associated with the \
         configuration server isn't valid.",
        "Associate the policy with the configuration server in use or create a new replication \
         policy and associate it. If the policy is invalid, disassociate and delete it.",
    )
}

#[cfg(test)]
mod tests {
    use super::super::Outcome;
    use super::super::fixtures::site;
    use super::*;

    #[test]
    fn an_expired_key_without_a_registered_server_fails() {
        let mut s = site();
        s.configuration_server_registered = false;
        s.registration_key_expires_ms = Some(s.now_ms - 2 * 3_600_000);
        let r = registration_key(&s);
        assert_eq!((r.outcome, r.error_id), (Outcome::Failed, None));
        assert_eq!(
            r.message,
            "the vault registration key expired at 2026-11-22T04:00:00Z (2h ago, now \
             2026-11-22T06:00:00Z) before a configuration server registered with it; keys are \
             valid for five days"
        );
        s.registration_key_expires_ms = None;
        assert!(
            registration_key(&s)
                .message
                .contains("has issued no registration key")
        );
        s.registration_key_expires_ms = Some(s.now_ms + REGISTRATION_KEY_VALIDITY_MS);
        assert!(
            registration_key(&s)
                .message
                .contains("valid until 2026-11-27T06:00:00Z (5d from now)")
        );
        // Registered: the key's expiry no longer matters.
        s.configuration_server_registered = true;
        s.registration_key_expires_ms = Some(0);
        assert_eq!(registration_key(&s).outcome, Outcome::Passed);
    }

    #[test]
    fn no_policy_association_is_78253() {
        let mut s = site();
        s.policy_associated = false;
        let r = policy(&s);
        assert_eq!((r.outcome, r.error_id), (Outcome::Failed, Some(78253)));
        assert!(r.message.starts_with(
            "Protection couldn't be successfully enabled for the virtual machine: no replication \
             policy is associated"
        ));
        assert!(
            r.possible_causes
                .starts_with("This error may occur if a replication policy")
        );
    }
}
