//! Proving control of a phone or an email address: SMS one-time codes (phone verification and
//! step-up), email verification and password-reset tokens, and the changes of password and
//! email they guard.
//!
//! Codes and tokens are stored only as HMAC-SHA256 digests under a key derived from the master
//! secret (a six-digit code's plain hash could be reversed by trying all million), bound to the
//! user and the purpose, single use, and short-lived.

use std::time::Duration as StdDuration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;

use super::tokens::{constant_time_eq, hex};
use super::{Identity, IdentityError};
use crate::domain::account::User;
use crate::domain::identity::{Email, check_password};
use crate::domain::ids::UserId;
use crate::notify::{Email as Mail, Sms};
use crate::ratelimit::Quota;
use crate::secrets::hmac_sha256;
use crate::store::auth_codes::AuthCode;
use crate::store::carts::Versioned;

/// An SMS code is valid this long.
pub const OTP_TTL: Duration = Duration::minutes(10);
/// Wrong guesses a code survives; the next guess is refused even if right.
pub const OTP_MAX_ATTEMPTS: u32 = 5;
/// Codes sent to one phone number per hour.
const OTP_SEND_QUOTA: Quota = Quota {
    limit: 5,
    window: StdDuration::from_secs(3600),
};
/// Email verification links are valid this long.
const EMAIL_TOKEN_TTL: Duration = Duration::hours(24);
/// Password-reset links are valid this long.
const RESET_TOKEN_TTL: Duration = Duration::minutes(30);
/// Verification or reset emails per address per hour.
const EMAIL_SEND_QUOTA: Quota = Quota {
    limit: 3,
    window: StdDuration::from_secs(3600),
};

const EMAIL_VERIFY: &str = "email_verify";
const PASSWORD_RESET: &str = "password_reset";

/// What an SMS code is for; a code for one purpose never passes for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OtpPurpose {
    /// Prove the phone number on the account.
    VerifyPhone,
    /// Unlock sensitive operations for five minutes.
    StepUp,
}

impl OtpPurpose {
    fn as_str(self) -> &'static str {
        match self {
            OtpPurpose::VerifyPhone => "otp_verify_phone",
            OtpPurpose::StepUp => "otp_step_up",
        }
    }
}

/// What a verified code yields.
#[derive(Debug)]
pub enum OtpOutcome {
    PhoneVerified,
    /// An access token whose `amr` includes `otp`, for step-up-gated operations.
    SteppedUp {
        access_token: String,
    },
}

impl Identity {
    pub(super) fn digest(&self, user: UserId, purpose: &str, secret: &str) -> String {
        let message = format!("{user}|{purpose}|{secret}");
        hex(&hmac_sha256(&self.code_key, message.as_bytes()))
    }

    pub(super) async fn account(&self, id: UserId) -> Result<User, IdentityError> {
        self.users
            .get(id)
            .await?
            .map(|v| v.value)
            .filter(|u| !u.erased && !u.banned)
            .ok_or(IdentityError::NotFound)
    }

    /// Sends a six-digit code to the account's phone. Returns how long it is valid.
    #[tracing::instrument(skip(self), fields(user_id = %user_id))]
    pub async fn send_otp(
        &self,
        user_id: UserId,
        purpose: OtpPurpose,
    ) -> Result<Duration, IdentityError> {
        let user = self.account(user_id).await?;
        let phone = user.phone.ok_or(IdentityError::NoPhone)?;
        self.limit(&format!("otp:send:{}", phone.as_str()), &[OTP_SEND_QUOTA])
            .await?;
        let code = format!("{:06}", rand::random_range(0..1_000_000u32));
        self.store_code(user_id, purpose.as_str(), &code, phone.as_str(), OTP_TTL)
            .await?;
        let body = format!(
            "Your hexmarket code is {code}. It expires in {} minutes. Never share it.",
            OTP_TTL.num_minutes()
        );
        self.delivery
            .sms
            .send(&Sms::new(phone.as_str(), body))
            .await?;
        Ok(OTP_TTL)
    }

    /// Checks a code. Wrong guesses count; the sixth guess fails even if right.
    #[tracing::instrument(skip(self, code), fields(user_id = %user_id))]
    pub async fn verify_otp(
        &self,
        user_id: UserId,
        purpose: OtpPurpose,
        code: &str,
        auth_time: DateTime<Utc>,
        methods: &[String],
    ) -> Result<OtpOutcome, IdentityError> {
        let user = self.account(user_id).await?;
        let phone = user.phone.as_ref().ok_or(IdentityError::NoPhone)?;
        self.consume(user_id, purpose.as_str(), code, Some(phone.as_str()), true)
            .await?;
        match purpose {
            OtpPurpose::VerifyPhone => {
                let verified = phone.clone();
                self.modify_user(user_id, |u| {
                    // Only the number the code went to becomes verified.
                    if u.phone.as_ref() == Some(&verified) {
                        u.phone_verified = true;
                    }
                    Ok(())
                })
                .await?;
                Ok(OtpOutcome::PhoneVerified)
            }
            OtpPurpose::StepUp => {
                let now = self.clock.now();
                // The caller's methods are kept: a step-up by SMS does not undo a second factor.
                let access_token = self.tokens.issue_with(
                    user.id,
                    user.role,
                    auth_time,
                    methods,
                    Some(now),
                    now,
                )?;
                tracing::info!("step-up granted");
                Ok(OtpOutcome::SteppedUp { access_token })
            }
        }
    }

    /// Spends a code or token: it must exist, match, be unexpired, unused, and (for codes)
    /// have guesses left. Every guess is recorded with compare-and-set before it is judged, so
    /// parallel guesses cannot exceed the limit.
    async fn consume(
        &self,
        user_id: UserId,
        purpose: &str,
        secret: &str,
        sent_to: Option<&str>,
        counted: bool,
    ) -> Result<(), IdentityError> {
        let invalid = || {
            if counted {
                IdentityError::InvalidCode
            } else {
                IdentityError::InvalidToken
            }
        };
        for _ in 0..8 {
            let Some(Versioned {
                version,
                value: mut record,
            }) = self.codes.get(user_id, purpose).await?
            else {
                return Err(invalid());
            };
            let now = self.clock.now();
            if record.used
                || now >= record.expires_at
                || sent_to.is_some_and(|to| to != record.sent_to)
            {
                return Err(invalid());
            }
            if counted && record.attempts >= OTP_MAX_ATTEMPTS {
                return Err(IdentityError::CodeExhausted);
            }
            let matches = constant_time_eq(&record.digest, &self.digest(user_id, purpose, secret));
            if matches {
                record.used = true;
            } else if counted {
                record.attempts += 1;
            } else {
                return Err(invalid());
            }
            if self
                .codes
                .update(user_id, purpose, &record, version)
                .await?
            {
                return if matches { Ok(()) } else { Err(invalid()) };
            }
        }
        Err(IdentityError::Contended)
    }

    /// Emails a link proving the account's address.
    #[tracing::instrument(skip(self), fields(user_id = %user_id))]
    pub async fn request_email_verification(&self, user_id: UserId) -> Result<(), IdentityError> {
        let user = self.account(user_id).await?;
        if user.email_verified {
            return Err(IdentityError::AlreadyVerified);
        }
        self.limit(
            &format!("email:send:{}", user.email.canonical()),
            &[EMAIL_SEND_QUOTA],
        )
        .await?;
        let link = self
            .email_link(&user, EMAIL_VERIFY, EMAIL_TOKEN_TTL, "verify-email")
            .await?;
        let text = format!(
            "Hello {},\n\nConfirm your email address for hexmarket by opening this link within 24 hours:\n\n{link}\n\nIf you did not create an account, ignore this message.\n",
            user.name
        );
        self.delivery
            .email
            .send(&Mail::new(
                user.email.as_str(),
                "Confirm your email address",
                text,
            ))
            .await?;
        Ok(())
    }

    /// Marks the address verified if the token is the one sent to it.
    pub async fn confirm_email(&self, token: &str) -> Result<(), IdentityError> {
        let (user_id, secret) = parse_token(token).ok_or(IdentityError::InvalidToken)?;
        let user = self
            .account(user_id)
            .await
            .map_err(|_| IdentityError::InvalidToken)?;
        self.consume(
            user_id,
            EMAIL_VERIFY,
            secret,
            Some(user.email.as_str()),
            false,
        )
        .await?;
        let email = user.email.clone();
        self.modify_user(user_id, |u| {
            if u.email == email {
                u.email_verified = true;
            }
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// Emails a reset link if an account has this address. Answers the same either way, so
    /// nobody learns which addresses have accounts.
    #[tracing::instrument(skip_all, fields(email = %email.masked()))]
    pub async fn forgot_password(&self, email: &Email) -> Result<(), IdentityError> {
        let Some(Versioned { value: user, .. }) = self.users.find_by_email(email).await? else {
            return Ok(());
        };
        if user.banned || user.erased {
            return Ok(());
        }
        if self
            .limit(
                &format!("email:send:{}", user.email.canonical()),
                &[EMAIL_SEND_QUOTA],
            )
            .await
            .is_err()
        {
            tracing::warn!("password reset emails rate limited");
            return Ok(());
        }
        let link = self
            .email_link(&user, PASSWORD_RESET, RESET_TOKEN_TTL, "reset-password")
            .await?;
        let text = format!(
            "Hello {},\n\nSomeone asked to reset your hexmarket password. Open this link within 30 minutes to choose a new one:\n\n{link}\n\nIf it was not you, ignore this message; your password stays as it is.\n",
            user.name
        );
        self.delivery
            .email
            .send(&Mail::new(user.email.as_str(), "Reset your password", text))
            .await?;
        Ok(())
    }

    /// Sets a new password with a reset token, and ends every session.
    pub async fn reset_password(
        &self,
        token: &str,
        new_password: String,
    ) -> Result<(), IdentityError> {
        let (user_id, secret) = parse_token(token).ok_or(IdentityError::InvalidToken)?;
        let user = self
            .account(user_id)
            .await
            .map_err(|_| IdentityError::InvalidToken)?;
        check_password(&new_password, &user.email).map_err(IdentityError::Password)?;
        self.consume(
            user_id,
            PASSWORD_RESET,
            secret,
            Some(user.email.as_str()),
            false,
        )
        .await?;
        self.set_password(user_id, new_password).await?;
        tracing::info!(user_id = %user_id, "password reset");
        Ok(())
    }

    /// Changes the password of a signed-in user who knows the current one (the HTTP layer
    /// also demands a step-up), and ends every session.
    pub async fn change_password(
        &self,
        user_id: UserId,
        current: String,
        new_password: String,
    ) -> Result<(), IdentityError> {
        let user = self.account(user_id).await?;
        if !self
            .hasher
            .verify(current, Some(user.password_hash.clone()))
            .await?
        {
            return Err(IdentityError::InvalidCredentials);
        }
        check_password(&new_password, &user.email).map_err(IdentityError::Password)?;
        self.set_password(user_id, new_password).await
    }

    async fn set_password(
        &self,
        user_id: UserId,
        new_password: String,
    ) -> Result<(), IdentityError> {
        let hash = self.hasher.hash(new_password).await?;
        self.modify_user(user_id, |u| {
            u.password_hash = hash.clone();
            Ok(())
        })
        .await?;
        self.revoke_all(user_id).await
    }

    /// Moves the account to another email address (unverified until confirmed).
    pub async fn change_email(
        &self,
        user_id: UserId,
        new_email: Email,
    ) -> Result<User, IdentityError> {
        let user = self.account(user_id).await?;
        if user.email.as_str() == new_email.as_str() {
            return Ok(user);
        }
        // Another spelling of the same mailbox (`Jane@` for `jane@`) only changes how the
        // address is shown: the claim and the verification stay.
        let same_mailbox = user.email == new_email;
        if !same_mailbox && !self.users.claim_email(&new_email, user_id).await? {
            return Err(IdentityError::EmailTaken);
        }
        let changed = self
            .modify_user(user_id, |u| {
                u.email = new_email.clone();
                u.email_verified &= same_mailbox;
                Ok(())
            })
            .await;
        match changed {
            Ok(updated) => {
                if !same_mailbox {
                    self.users.release_email(&user.email, user_id).await?;
                }
                tracing::info!(user_id = %user_id, "email changed");
                Ok(updated)
            }
            Err(e) => {
                if !same_mailbox {
                    self.users.release_email(&new_email, user_id).await?;
                }
                Err(e)
            }
        }
    }

    /// Stores the keyed digest of `secret` for `purpose`, replacing any earlier one.
    async fn store_code(
        &self,
        user_id: UserId,
        purpose: &str,
        secret: &str,
        sent_to: &str,
        ttl: Duration,
    ) -> Result<(), IdentityError> {
        let now = self.clock.now();
        let record = AuthCode {
            digest: self.digest(user_id, purpose, secret),
            sent_to: sent_to.to_owned(),
            created_at: now,
            expires_at: now + ttl,
            attempts: 0,
            used: false,
        };
        Ok(self.codes.replace(user_id, purpose, &record).await?)
    }

    /// Issues a single-use token for `purpose` and returns the site link carrying it.
    async fn email_link(
        &self,
        user: &User,
        purpose: &str,
        ttl: Duration,
        page: &str,
    ) -> Result<String, IdentityError> {
        let secret = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        self.store_code(user.id, purpose, &secret, user.email.as_str(), ttl)
            .await?;
        let token = format!("{}.{secret}", user.id.as_uuid().simple());
        Ok(format!("{}/{page}?token={token}", self.delivery.public_url))
    }
}

/// A token is `user.secret`.
fn parse_token(token: &str) -> Option<(UserId, &str)> {
    let (user, secret) = token.split_once('.')?;
    (secret.len() == 43 && !secret.contains('.')).then_some(())?;
    Some((user.parse().ok()?, secret))
}
