//! The second factor: enrolling an authenticator app (TOTP) with a pending secret confirmed by
//! its first code, single-use recovery codes, and checking either at login and for step-up.
//!
//! Guesses are limited per account ([`GUESS_QUOTAS`]) whether they come through login or
//! step-up, and a right answer resets the count, like login attempts. Accepting a code and
//! remembering its time step is one compare-and-set on the account row, so of two requests
//! racing with one code only one gets in.

use std::time::Duration as StdDuration;

use chrono::Duration;

use super::tokens::{AMR_MFA, AMR_OTP, AMR_PWD, constant_time_eq};
use super::totp::{Sealer, TotpSecret, step_of};
use super::{Identity, IdentityError};
use crate::domain::account::User;
use crate::domain::ids::UserId;
use crate::domain::second_factor::{ActiveTotp, PendingTotp};
use crate::ratelimit::Quota;
use crate::secrets::hmac_sha256;

/// An enrolment's secret must be confirmed within this long.
pub const PENDING_TTL: Duration = Duration::minutes(15);
/// Recovery codes handed out at confirmation.
pub const RECOVERY_CODES: usize = 10;
/// Second-factor guesses per account: each tier must hold.
pub(super) const GUESS_QUOTAS: [Quota; 2] = [
    Quota {
        limit: 5,
        window: StdDuration::from_secs(15 * 60),
    },
    Quota {
        limit: 20,
        window: StdDuration::from_secs(24 * 60 * 60),
    },
];
const RECOVERY_PURPOSE: &str = "recovery_code";

/// What a user presents as their second factor.
#[derive(Clone, PartialEq, Eq)]
pub enum SecondFactorProof {
    /// Six digits from the authenticator app.
    Totp(String),
    /// One of the recovery codes (case, spaces and dashes do not matter).
    RecoveryCode(String),
}

impl std::fmt::Debug for SecondFactorProof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SecondFactorProof::Totp(_) => "Totp(..)",
            SecondFactorProof::RecoveryCode(_) => "RecoveryCode(..)",
        })
    }
}

/// A freshly generated authenticator secret, to show the user once.
#[derive(Debug, Clone)]
pub struct TotpEnrolment {
    /// Base32, for typing into an app.
    pub secret: String,
    /// `otpauth://totp/…`, for a QR code.
    pub uri: String,
    /// How long the secret waits for its first code.
    pub expires_in: Duration,
}

impl Identity {
    fn sealer(&self) -> Sealer {
        Sealer::new(&hmac_sha256(&self.code_key, b"totp-secrets"))
    }

    fn recovery_digest(&self, user: UserId, code: &str) -> String {
        let normalised: String = code
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .map(|c| c.to_ascii_lowercase())
            .collect();
        self.digest(user, RECOVERY_PURPOSE, &normalised)
    }

    /// Starts enrolment: a new secret waits for its first code. An active authenticator stays
    /// active until the new one is confirmed.
    #[tracing::instrument(skip(self), fields(user_id = %user_id))]
    pub async fn begin_totp(&self, user_id: UserId) -> Result<TotpEnrolment, IdentityError> {
        let user = self.account(user_id).await?;
        let secret = TotpSecret::generate();
        let sealed = self.sealer().seal(user_id, &secret);
        let expires_at = self.clock.now() + PENDING_TTL;
        self.modify_user(user_id, |u| {
            u.second_factor.pending = Some(PendingTotp {
                sealed: sealed.clone(),
                expires_at,
            });
            Ok(())
        })
        .await?;
        tracing::info!("TOTP enrolment started");
        Ok(TotpEnrolment {
            secret: secret.base32(),
            uri: secret.otpauth_uri(user.email.as_str()),
            expires_in: PENDING_TTL,
        })
    }

    /// Confirms the pending secret with its first code: it becomes the account's
    /// authenticator, replacing any earlier one, and fresh recovery codes replace the old.
    /// Returns the recovery codes, the only time they are seen in clear.
    #[tracing::instrument(skip(self, code), fields(user_id = %user_id))]
    pub async fn confirm_totp(
        &self,
        user_id: UserId,
        code: &str,
    ) -> Result<Vec<String>, IdentityError> {
        self.account(user_id).await?;
        let key = guess_key(user_id);
        self.limit(&key, &GUESS_QUOTAS).await?;
        let (codes, digests) = self.recovery_codes(user_id);
        let now = self.clock.now();
        let step = step_of(now.timestamp());
        let sealer = self.sealer();
        self.modify_user(user_id, |u| {
            let pending = u
                .second_factor
                .pending
                .as_ref()
                .filter(|p| p.expires_at > now)
                .ok_or(IdentityError::TotpNotEnrolled)?;
            let secret = sealer
                .open(user_id, &pending.sealed)
                .ok_or_else(|| anyhow::anyhow!("a pending TOTP secret does not open"))?;
            let used = secret
                .accepts(code, step, 0)
                .ok_or(IdentityError::InvalidCode)?;
            u.second_factor.totp = Some(ActiveTotp {
                sealed: pending.sealed.clone(),
                last_step: used,
                enabled_at: now,
            });
            u.second_factor.pending = None;
            u.second_factor.recovery = digests.clone();
            Ok(())
        })
        .await?;
        self.limiter.reset(&key).await?;
        tracing::info!("TOTP enabled");
        Ok(codes)
    }

    /// Enrols and activates an authenticator at once, for accounts made from the command line
    /// (whose operator cannot type a code back). Returns the secret and the recovery codes.
    pub async fn enrol_totp_now(
        &self,
        user_id: UserId,
    ) -> Result<(TotpEnrolment, Vec<String>), IdentityError> {
        let user = self.account(user_id).await?;
        let secret = TotpSecret::generate();
        let sealed = self.sealer().seal(user_id, &secret);
        let (codes, digests) = self.recovery_codes(user_id);
        let now = self.clock.now();
        self.modify_user(user_id, |u| {
            u.second_factor.totp = Some(ActiveTotp {
                sealed: sealed.clone(),
                last_step: 0,
                enabled_at: now,
            });
            u.second_factor.pending = None;
            u.second_factor.recovery = digests.clone();
            Ok(())
        })
        .await?;
        tracing::info!(user_id = %user_id, "TOTP enabled from the command line");
        let enrolment = TotpEnrolment {
            secret: secret.base32(),
            uri: secret.otpauth_uri(user.email.as_str()),
            expires_in: Duration::zero(),
        };
        Ok((enrolment, codes))
    }

    /// Replaces the recovery codes with fresh ones (the HTTP layer demands a step-up); the
    /// old ones stop working. Returns the new codes, the only time they are seen in clear.
    #[tracing::instrument(skip(self), fields(user_id = %user_id))]
    pub async fn renew_recovery_codes(
        &self,
        user_id: UserId,
    ) -> Result<Vec<String>, IdentityError> {
        let (codes, digests) = self.recovery_codes(user_id);
        self.modify_user(user_id, |u| {
            if !u.second_factor.enabled() {
                return Err(IdentityError::TotpNotEnrolled);
            }
            u.second_factor.recovery = digests.clone();
            Ok(())
        })
        .await?;
        tracing::info!("recovery codes renewed");
        Ok(codes)
    }

    /// Removes the authenticator and the recovery codes (the HTTP layer demands a step-up).
    /// Administrators must keep one.
    #[tracing::instrument(skip(self), fields(user_id = %user_id))]
    pub async fn disable_totp(&self, user_id: UserId) -> Result<(), IdentityError> {
        self.modify_user(user_id, |u| {
            if !u.second_factor.enabled() {
                return Err(IdentityError::TotpNotEnrolled);
            }
            if u.role == crate::domain::identity::Role::Admin {
                return Err(IdentityError::SecondFactorMandatory);
            }
            u.second_factor = Default::default();
            Ok(())
        })
        .await?;
        tracing::info!("TOTP disabled");
        Ok(())
    }

    /// Checks a code from the authenticator or a recovery code and spends it: a TOTP code's
    /// step (and every earlier one) is refused from then on, a recovery code is deleted.
    #[tracing::instrument(skip(self, proof), fields(user_id = %user_id))]
    pub async fn verify_second_factor(
        &self,
        user_id: UserId,
        proof: &SecondFactorProof,
    ) -> Result<(), IdentityError> {
        let key = guess_key(user_id);
        self.limit(&key, &GUESS_QUOTAS).await?;
        let step = step_of(self.clock.now().timestamp());
        let sealer = self.sealer();
        let recovery = match proof {
            SecondFactorProof::RecoveryCode(code) => Some(self.recovery_digest(user_id, code)),
            SecondFactorProof::Totp(_) => None,
        };
        let outcome = self
            .modify_user(user_id, |u| {
                let active = u
                    .second_factor
                    .totp
                    .as_mut()
                    .ok_or(IdentityError::TotpNotEnrolled)?;
                match (proof, &recovery) {
                    (SecondFactorProof::Totp(code), _) => {
                        let secret = sealer
                            .open(user_id, &active.sealed)
                            .ok_or_else(|| anyhow::anyhow!("a TOTP secret does not open"))?;
                        active.last_step = secret
                            .accepts(code, step, active.last_step)
                            .ok_or(IdentityError::InvalidCode)?;
                    }
                    (SecondFactorProof::RecoveryCode(_), Some(digest)) => {
                        let before = u.second_factor.recovery.len();
                        u.second_factor
                            .recovery
                            .retain(|kept| !constant_time_eq(kept, digest));
                        if u.second_factor.recovery.len() == before {
                            return Err(IdentityError::InvalidCode);
                        }
                    }
                    (SecondFactorProof::RecoveryCode(_), None) => {
                        return Err(IdentityError::InvalidCode);
                    }
                }
                Ok(())
            })
            .await;
        match outcome {
            Ok(user) => {
                self.limiter.reset(&key).await?;
                if recovery.is_some() {
                    tracing::warn!(
                        left = user.second_factor.recovery.len(),
                        "a recovery code was used"
                    );
                }
                Ok(())
            }
            Err(e) => {
                tracing::info!(error = %e, "second factor refused");
                Err(e)
            }
        }
    }

    /// The authentication methods of a login by `user`: the password alone for accounts
    /// without a second factor; otherwise the second factor must be presented and right.
    pub(super) async fn login_methods(
        &self,
        user: &User,
        proof: Option<&SecondFactorProof>,
    ) -> Result<Vec<String>, IdentityError> {
        if !user.second_factor.enabled() {
            return Ok(vec![AMR_PWD.to_owned()]);
        }
        let proof = proof.ok_or(IdentityError::SecondFactorRequired)?;
        self.verify_second_factor(user.id, proof).await?;
        Ok(vec![
            AMR_PWD.to_owned(),
            AMR_OTP.to_owned(),
            AMR_MFA.to_owned(),
        ])
    }

    /// Step-up with the second factor: an access token like the caller's (same login time and
    /// methods) that also proves a second factor just now.
    #[tracing::instrument(skip(self, proof, methods), fields(user_id = %user_id))]
    pub async fn step_up_with_second_factor(
        &self,
        user_id: UserId,
        proof: &SecondFactorProof,
        auth_time: chrono::DateTime<chrono::Utc>,
        methods: &[String],
    ) -> Result<String, IdentityError> {
        let user = self.account(user_id).await?;
        self.verify_second_factor(user_id, proof).await?;
        let mut amr = methods.to_vec();
        if !amr.iter().any(|m| m == AMR_MFA) {
            amr.push(AMR_MFA.to_owned());
        }
        let now = self.clock.now();
        let token = self
            .tokens
            .issue_with(user.id, user.role, auth_time, &amr, Some(now), now)?;
        tracing::info!("step-up granted by the second factor");
        Ok(token)
    }

    /// [`RECOVERY_CODES`] fresh codes (`xxxxx-xxxxx`, 50 random bits each) and their digests.
    fn recovery_codes(&self, user_id: UserId) -> (Vec<String>, Vec<String>) {
        (0..RECOVERY_CODES)
            .map(|_| {
                let raw = data_encoding::BASE32_NOPAD
                    .encode(&rand::random::<[u8; 10]>())
                    .to_ascii_lowercase();
                let code = format!("{}-{}", &raw[..5], &raw[5..10]);
                let digest = self.recovery_digest(user_id, &code);
                (code, digest)
            })
            .unzip()
    }
}

fn guess_key(user: UserId) -> String {
    format!("second-factor:{user}")
}
