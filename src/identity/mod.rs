//! Accounts and sessions: registration, login with brute-force limits, refresh-token rotation
//! with reuse detection, logout, and the access tokens every other handler trusts.

mod codes;
pub mod federation;
mod limits;
mod linking;
pub mod passkeys;
pub mod password;
pub mod revocation;
mod second_factor;
pub mod tokens;
pub mod totp;

pub use codes::{OTP_MAX_ATTEMPTS, OTP_TTL, OtpOutcome, OtpPurpose};
pub use linking::{LinkProof, ProviderSignIn};
pub use second_factor::{RECOVERY_CODES, SecondFactorProof, TotpEnrolment};

use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};

use crate::bus::SharedBus;
use crate::clock::Clock;
use crate::domain::account::User;
use crate::domain::identity::{Email, PasswordRule, Phone, Role, check_password};
use crate::domain::ids::{SessionId, UserId};
use crate::notify::{NotifyError, SharedEmail, SharedSms};
use crate::ratelimit::{Decision, LimitError, Quota, SharedLimiter};
use crate::store::auth_codes::AuthCodeRepo;
use crate::store::carts::Versioned;
use crate::store::sessions::{REMEMBERED_HASHES, RefreshFamily, SessionRepo};
use crate::store::sign_in::{Ceremonies, Credentials};
use crate::store::users::{CreateError, UserRepo};
use crate::store::{SharedStore, StoreError};
use password::PasswordHasher;
use revocation::Revocations;
use tokens::{AccessTokens, RefreshToken, constant_time_eq};

/// A refresh token not used for this long stops working.
pub const IDLE_TIMEOUT: Duration = Duration::days(7);
/// A login's refresh tokens stop working this long after the login, used or not.
pub const ABSOLUTE_LIFETIME: Duration = Duration::days(30);

/// Login attempts per account: each tier must hold, so lockouts grow with persistence.
const ACCOUNT_QUOTAS: [Quota; 3] = [
    Quota {
        limit: 5,
        window: StdDuration::from_secs(15 * 60),
    },
    Quota {
        limit: 10,
        window: StdDuration::from_secs(60 * 60),
    },
    Quota {
        limit: 20,
        window: StdDuration::from_secs(24 * 60 * 60),
    },
];

/// What a login or refresh hands out.
#[derive(Debug, Clone)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: i64,
    pub user_id: UserId,
}

/// Why an identity operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("an account with this email exists")]
    EmailTaken,
    #[error("password {0}")]
    Password(PasswordRule),
    #[error("wrong email or password")]
    InvalidCredentials,
    #[error("this account is banned")]
    Banned,
    #[error("too many attempts")]
    TooManyAttempts { retry_after: StdDuration },
    #[error("the refresh token is not valid")]
    InvalidRefreshToken,
    #[error("no such account")]
    NotFound,
    #[error("the cursor is not valid")]
    InvalidCursor,
    #[error("the account kept changing under this update; try again")]
    Contended,
    #[error("the account has no phone number")]
    NoPhone,
    #[error("the code is wrong, expired or already used")]
    InvalidCode,
    #[error("too many wrong guesses; request a new code")]
    CodeExhausted,
    #[error("the token is not valid, expired or already used")]
    InvalidToken,
    #[error("the email address is already verified")]
    AlreadyVerified,
    #[error(
        "this account has a second factor: send a code from the authenticator app (otp) or a recovery code (recovery_code)"
    )]
    SecondFactorRequired,
    #[error("no authenticator is enrolled (or the enrolment expired)")]
    TotpNotEnrolled,
    #[error("administrators must keep a second factor; enrol a new authenticator instead")]
    SecondFactorMandatory,
    #[error("the ceremony is unknown, expired or already used; start again")]
    CeremonyUnknown,
    #[error("no passkey of an account here made this assertion")]
    PasskeyNotRecognised,
    #[error("the passkey's answer does not hold: {0}")]
    PasskeyInvalid(String),
    #[error("the passkey's signature counter did not grow: the authenticator may have been cloned")]
    PasskeyCloned,
    #[error("this passkey is registered to another account")]
    PasskeyTaken,
    #[error("an account holds at most 10 passkeys; remove one first")]
    PasskeyLimit,
    #[error("this account has no passkey")]
    NoPasskeys,
    #[error("this is the account's last way to sign in")]
    LastSignInMethod,
    #[error("the provider gave no email address, and a new account needs one")]
    ProviderEmailMissing,
    #[error(
        "an account has this email, and the provider does not vouch for it: sign in to that account and link the provider from there"
    )]
    ProviderEmailUnverified,
    #[error("this provider identity is linked to another account")]
    IdentityTaken,
    #[error(transparent)]
    Delivery(#[from] NotifyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Limiter(#[from] LimitError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// A new account's details, validated.
#[derive(Debug, Clone)]
pub struct NewAccount {
    pub email: Email,
    pub password: String,
    pub name: String,
    pub role: Role,
    pub phone: Option<Phone>,
}

/// Where codes and links are sent.
#[derive(Clone)]
pub struct Delivery {
    pub sms: SharedSms,
    pub email: SharedEmail,
    /// Base URL of the site, for links in emails.
    pub public_url: String,
}

/// What the identity service is built from.
pub struct IdentityParts {
    pub store: SharedStore,
    /// Carries revocations to the other nodes.
    pub bus: SharedBus,
    pub tokens: AccessTokens,
    pub limiter: SharedLimiter,
    pub clock: Clock,
    /// Key of the hashes one-time codes and tokens are stored as.
    pub code_key: [u8; 32],
    pub delivery: Delivery,
    /// OpenID Connect providers to sign in with.
    pub providers: Vec<crate::config::OidcProviderSettings>,
    /// The WebAuthn relying party of passkeys.
    pub webauthn: crate::config::WebauthnSettings,
}

/// The identity service shared by the HTTP handlers and the CLI.
#[derive(Clone)]
pub struct Identity {
    pub users: UserRepo,
    sessions: SessionRepo,
    codes: AuthCodeRepo,
    hasher: PasswordHasher,
    pub tokens: AccessTokens,
    /// Revocation marks: written by [`revoke_all`](Self::revoke_all), read by `tokens`.
    pub revocations: Revocations,
    limiter: SharedLimiter,
    pub clock: Clock,
    code_key: [u8; 32],
    delivery: Delivery,
    /// Sign-in ceremonies between their two halves.
    ceremonies: Ceremonies,
    /// Owners of provider identities and passkeys.
    credentials: Credentials,
    /// Sign-in with OpenID Connect providers.
    pub federation: federation::Federation,
    relying_party: passkeys::RelyingParty,
}

/// Which accounts an admin lists (erased accounts never).
#[derive(Debug, Clone, Default)]
pub struct AccountFilter {
    pub role: Option<Role>,
    pub banned: Option<bool>,
    /// Substring of the email, case-insensitive.
    pub email: Option<String>,
}

impl AccountFilter {
    /// `needle` is [`AccountFilter::email`] lowercased, once per listing rather than per row.
    fn passes(&self, user: &User, needle: Option<&str>) -> bool {
        !user.erased
            && self.role.is_none_or(|r| r == user.role)
            && self.banned.is_none_or(|b| b == user.banned)
            && needle.is_none_or(|needle| user.email.as_str().to_lowercase().contains(needle))
    }
}

impl Identity {
    /// Accounts that pass `filter`, a page of at most `limit` at a time (and the cursor of the
    /// next). Filters apply per stored page, so it reads on until the page is full or the table
    /// ends.
    pub async fn accounts(
        &self,
        filter: &AccountFilter,
        limit: usize,
        mut cursor: Option<String>,
    ) -> Result<(Vec<User>, Option<String>), IdentityError> {
        let needle = filter.email.as_deref().map(str::to_lowercase);
        let mut users = Vec::new();
        loop {
            let (page, next) =
                self.users
                    .list(cursor.take(), limit)
                    .await
                    .map_err(|e| match e {
                        StoreError::Misuse(_) => IdentityError::InvalidCursor,
                        other => other.into(),
                    })?;
            users.extend(
                page.into_iter()
                    .filter(|u| filter.passes(u, needle.as_deref())),
            );
            cursor = next;
            if users.len() >= limit || cursor.is_none() {
                return Ok((users, cursor));
            }
        }
    }

    pub fn new(parts: IdentityParts) -> anyhow::Result<Self> {
        let IdentityParts {
            store,
            bus,
            tokens,
            limiter,
            clock,
            code_key,
            delivery,
            providers,
            webauthn,
        } = parts;
        let ceremonies = Ceremonies::new(Arc::clone(&store));
        let revocations = Revocations::new(
            Arc::clone(&store),
            bus,
            clock.clone(),
            tokens.marks().clone(),
        );
        Ok(Identity {
            federation: federation::Federation::new(
                &providers,
                &delivery.public_url,
                ceremonies.clone(),
            )?,
            relying_party: passkeys::RelyingParty::new(&webauthn)?,
            ceremonies,
            credentials: Credentials::new(Arc::clone(&store)),
            users: UserRepo::new(Arc::clone(&store)),
            sessions: SessionRepo::new(Arc::clone(&store)),
            codes: AuthCodeRepo::new(store),
            hasher: PasswordHasher::new()?,
            tokens,
            revocations,
            limiter,
            clock,
            code_key,
            delivery,
        })
    }

    /// The rate limiter of this node (shared with the other nodes through Redis when set),
    /// for services that limit what users do.
    pub fn limiter(&self) -> &SharedLimiter {
        &self.limiter
    }

    /// The transports account messages go out on (notifications use the same).
    pub fn delivery(&self) -> &Delivery {
        &self.delivery
    }

    /// Creates an account (any role; the HTTP layer allows only self-service roles).
    #[tracing::instrument(skip_all, fields(email = %account.email.masked(), role = account.role.as_str()))]
    pub async fn register(&self, account: NewAccount) -> Result<User, IdentityError> {
        check_password(&account.password, &account.email).map_err(IdentityError::Password)?;
        let now = self.clock.now();
        let user = User {
            phone: account.phone,
            ..User::new(
                account.email,
                self.hasher.hash(account.password).await?,
                account.name,
                account.role,
                now,
            )
        };
        match self.users.create(&user).await {
            Ok(_) => {
                tracing::info!(user_id = %user.id, "account registered");
                Ok(user)
            }
            Err(CreateError::EmailTaken) => Err(IdentityError::EmailTaken),
            Err(CreateError::Store(e)) => Err(e.into()),
        }
    }

    /// Checks the password (and the second factor, when the account has one) and opens a
    /// session. `client` is the caller's address.
    #[tracing::instrument(skip_all, fields(email = %email.masked()))]
    pub async fn login(
        &self,
        email: &Email,
        password: String,
        second_factor: Option<&SecondFactorProof>,
        client: &str,
    ) -> Result<TokenPair, IdentityError> {
        self.check_address(client).await?;
        let account_key = format!("login:account:{}", email.canonical());
        self.limit(&account_key, &ACCOUNT_QUOTAS).await?;

        let user = self.users.find_by_email(email).await?;
        let phc = user.as_ref().map(|u| u.value.password_hash.clone());
        if !self.hasher.verify(password, phc).await? {
            tracing::info!("login failed");
            self.address_failed(client).await;
            return Err(IdentityError::InvalidCredentials);
        }
        let Some(Versioned { value: user, .. }) = user else {
            self.address_failed(client).await;
            return Err(IdentityError::InvalidCredentials);
        };
        if user.banned {
            return Err(IdentityError::Banned);
        }
        let amr = self.login_methods(&user, second_factor).await?;
        // Successful logins do not count against the account.
        self.limiter.reset(&account_key).await?;
        let proved = amr.iter().any(|m| m == tokens::AMR_MFA);
        self.open_session(&user, amr, proved).await
    }

    /// Opens a session for `user` signed in by `amr`; with `proved`, the sign-in proved a
    /// second factor, which also counts as a step-up for its window.
    pub(crate) async fn open_session(
        &self,
        user: &User,
        amr: Vec<String>,
        proved: bool,
    ) -> Result<TokenPair, IdentityError> {
        if user.banned {
            return Err(IdentityError::Banned);
        }
        let now = self.clock.now();
        let token = RefreshToken::generate(user.id, SessionId::new());
        let family = RefreshFamily {
            id: token.family,
            user_id: user.id,
            current: token.hash(),
            previous: Vec::new(),
            created_at: now,
            last_used_at: now,
            expires_at: now + ABSOLUTE_LIFETIME,
            revoked: false,
            amr,
            auth_time: now,
        };
        self.sessions.create(&family).await?;
        tracing::info!(user_id = %user.id, session = %family.id, "logged in");
        self.pair(user, &family, token, proved.then_some(now), now)
    }

    /// Rotates a refresh token: the presented one stops working and a new one is issued.
    /// Presenting a token that was already rotated away revokes its whole family.
    #[tracing::instrument(skip_all)]
    pub async fn refresh(&self, presented: &str) -> Result<TokenPair, IdentityError> {
        let token = RefreshToken::parse(presented).ok_or(IdentityError::InvalidRefreshToken)?;
        let Some(Versioned {
            version,
            value: mut family,
        }) = self.sessions.get(token.user_id, token.family).await?
        else {
            return Err(IdentityError::InvalidRefreshToken);
        };
        let now = self.clock.now();
        let hash = token.hash();
        if family.revoked {
            return Err(IdentityError::InvalidRefreshToken);
        }
        if !constant_time_eq(&family.current, &hash) {
            if family
                .previous
                .iter()
                .any(|old| constant_time_eq(old, &hash))
            {
                tracing::warn!(user_id = %family.user_id, session = %family.id, "refresh token reused; revoking its family");
                family.revoked = true;
                // If this loses a race, another write changed the family; revoke again on it.
                if !self.sessions.update(&family, version).await? {
                    self.revoke_family(family.user_id, family.id).await?;
                }
            }
            return Err(IdentityError::InvalidRefreshToken);
        }
        if now - family.last_used_at > IDLE_TIMEOUT || now >= family.expires_at {
            return Err(IdentityError::InvalidRefreshToken);
        }
        let Some(Versioned { value: user, .. }) = self.users.get(family.user_id).await? else {
            return Err(IdentityError::InvalidRefreshToken);
        };
        if user.banned || user.erased {
            return Err(IdentityError::InvalidRefreshToken);
        }
        let next = RefreshToken::generate(family.user_id, family.id);
        family
            .previous
            .push(std::mem::replace(&mut family.current, next.hash()));
        if family.previous.len() > REMEMBERED_HASHES {
            family.previous.remove(0);
        }
        family.last_used_at = now;
        // Compare-and-set: of two refreshes racing with one token, only one wins.
        if !self.sessions.update(&family, version).await? {
            return Err(IdentityError::InvalidRefreshToken);
        }
        // Stamped with the time taken before the account was read: a revocation that lands
        // after that read (a ban, a role change) is stamped later and so covers this token.
        self.pair(&user, &family, next, None, now)
    }

    /// Ends the session a refresh token belongs to.
    pub async fn logout(&self, presented: &str) -> Result<(), IdentityError> {
        let token = RefreshToken::parse(presented).ok_or(IdentityError::InvalidRefreshToken)?;
        let Some(family) = self.sessions.get(token.user_id, token.family).await? else {
            return Ok(());
        };
        let hash = token.hash();
        let known = constant_time_eq(&family.value.current, &hash)
            || family
                .value
                .previous
                .iter()
                .any(|old| constant_time_eq(old, &hash));
        if !known {
            return Err(IdentityError::InvalidRefreshToken);
        }
        self.revoke_family(token.user_id, token.family).await
    }

    /// Ends every session and every access token of a user (logout everywhere, password
    /// change or reset, ban, role change, erasure), on every node.
    #[tracing::instrument(skip(self), fields(user_id = %user_id))]
    pub async fn revoke_all(&self, user_id: UserId) -> Result<(), IdentityError> {
        for family in self.sessions.list(user_id).await? {
            if !family.value.revoked {
                self.revoke_family(user_id, family.value.id).await?;
            }
        }
        // After the families: a refresh that won its race with them issued its token before
        // this mark is stamped, so the mark covers it.
        self.revocations.revoke(user_id).await?;
        Ok(())
    }

    async fn revoke_family(&self, user_id: UserId, id: SessionId) -> Result<(), IdentityError> {
        for _ in 0..8 {
            let Some(Versioned {
                version,
                value: mut family,
            }) = self.sessions.get(user_id, id).await?
            else {
                return Ok(());
            };
            if family.revoked {
                return Ok(());
            }
            family.revoked = true;
            if self.sessions.update(&family, version).await? {
                return Ok(());
            }
        }
        Err(IdentityError::Contended)
    }

    /// Applies `change` to the stored account with compare-and-set, retrying on conflicts.
    pub async fn modify_user<F>(&self, id: UserId, mut change: F) -> Result<User, IdentityError>
    where
        F: FnMut(&mut User) -> Result<(), IdentityError>,
    {
        for _ in 0..8 {
            let Some(Versioned {
                version,
                value: mut user,
            }) = self.users.get(id).await?
            else {
                return Err(IdentityError::NotFound);
            };
            change(&mut user)?;
            user.updated_at = self.clock.now();
            if self.users.update(&user, version).await?.is_some() {
                return Ok(user);
            }
        }
        Err(IdentityError::Contended)
    }

    /// Checks `key` against every quota; the strictest wait wins.
    async fn limit(&self, key: &str, quotas: &[Quota]) -> Result<(), IdentityError> {
        let mut wait = StdDuration::ZERO;
        for quota in quotas {
            if let Decision::Limited { retry_after } = self.limiter.hit(key, *quota).await? {
                wait = wait.max(retry_after);
            }
        }
        if wait.is_zero() {
            Ok(())
        } else {
            tracing::warn!(key, retry_after_s = wait.as_secs(), "rate limited");
            Err(IdentityError::TooManyAttempts { retry_after: wait })
        }
    }

    fn pair(
        &self,
        user: &User,
        family: &RefreshFamily,
        refresh: RefreshToken,
        otp_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<TokenPair, IdentityError> {
        Ok(TokenPair {
            access_token: self.tokens.issue_with(
                user.id,
                user.role,
                family.auth_time,
                &family.amr,
                otp_at,
                now,
            )?,
            refresh_token: refresh.encode(),
            expires_in: tokens::ACCESS_TTL.num_seconds(),
            user_id: user.id,
        })
    }
}
