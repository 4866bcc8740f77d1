//! Passkeys (WebAuthn): registering several per account, signing in with one (naming the
//! account, or letting the authenticator say whose it is), stepping up with one, listing and
//! removing them.
//!
//! Each ceremony's server half (the challenge and what it allows) waits in the store under a
//! random id for at most [`CEREMONY_TTL`] and is taken once. Every assertion must carry user
//! verification (the library's passkey policy), come from an allowed origin and sign the
//! challenge; a signature counter that did not grow (a cloned authenticator) is refused, and
//! the new counter is written by compare-and-set on the account, so two assertions racing
//! with one counter value cannot both get in.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use anyhow::Context as _;
use chrono::Duration;
use serde::{Deserialize, Serialize};
use webauthn_rs::prelude::{
    CreationChallengeResponse, DiscoverableAuthentication, DiscoverableKey, Passkey,
    PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential,
    RequestChallengeResponse, Url, Webauthn, WebauthnBuilder, WebauthnError,
};

use webauthn_rs_proto::ResidentKeyRequirement;

use super::tokens::{AMR_HWK, AMR_MFA};
use super::{Identity, IdentityError, TokenPair};
use crate::config::WebauthnSettings;
use crate::domain::account::{StoredPasskey, User};
use crate::domain::identity::Email;
use crate::domain::ids::UserId;
use crate::store::sign_in;

/// How long an authenticator has to answer a challenge.
pub const CEREMONY_TTL: Duration = Duration::minutes(5);
/// Passkeys one account may hold.
pub const MAX_PASSKEYS: usize = 10;
/// Longest name of a passkey.
pub const MAX_NAME_CHARS: usize = 64;

const REGISTER: &str = "passkey-register";
const SIGN_IN: &str = "passkey-sign-in";
const STEP_UP: &str = "passkey-step-up";

/// The relying party: who passkeys are made for.
#[derive(Clone)]
pub struct RelyingParty {
    webauthn: Arc<Webauthn>,
}

impl RelyingParty {
    pub fn new(settings: &WebauthnSettings) -> anyhow::Result<Self> {
        let mut origins = settings.origins.iter().map(|o| Url::parse(o));
        let first = origins
            .next()
            .context("HEXMARKET_WEBAUTHN_ORIGINS names no origin")?
            .context("HEXMARKET_WEBAUTHN_ORIGINS")?;
        let mut builder = WebauthnBuilder::new(&settings.rp_id, &first)
            .context("HEXMARKET_WEBAUTHN_RP_ID does not fit the origins")?
            .rp_name("hexmarket");
        for origin in origins {
            builder = builder.append_allowed_origin(&origin.context("HEXMARKET_WEBAUTHN_ORIGINS")?);
        }
        Ok(RelyingParty {
            webauthn: Arc::new(builder.build()?),
        })
    }
}

/// A challenge for the client to hand to its authenticator.
#[derive(Debug, Clone)]
pub struct Challenge<T> {
    /// Sent back with the authenticator's answer.
    pub ceremony_id: String,
    /// What `navigator.credentials.create()` / `.get()` takes (as `publicKey`).
    pub options: T,
}

#[derive(Serialize, Deserialize)]
struct Registering {
    user_id: UserId,
    state: PasskeyRegistration,
}

#[derive(Serialize, Deserialize)]
enum Asserting {
    /// The account was named: its passkeys were offered.
    Named {
        user_id: UserId,
        state: PasskeyAuthentication,
    },
    /// The authenticator says whose it is.
    Discoverable { state: DiscoverableAuthentication },
}

fn ceremony_id() -> String {
    data_encoding::BASE64URL_NOPAD.encode(&rand::random::<[u8; 32]>())
}

fn ttl() -> StdDuration {
    CEREMONY_TTL.to_std().unwrap_or(StdDuration::from_secs(300))
}

/// The base64url id of a credential as the authenticator reports it.
fn credential_key(raw: &[u8]) -> String {
    data_encoding::BASE64URL_NOPAD.encode(raw)
}

impl IdentityError {
    /// Whether this is a passkey assertion that was checked and refused (what counts against
    /// the client's address, like a wrong password).
    pub(super) fn is_refused_passkey(&self) -> bool {
        matches!(
            self,
            IdentityError::PasskeyNotRecognised
                | IdentityError::PasskeyInvalid(_)
                | IdentityError::PasskeyCloned
        )
    }
}

fn refused(e: WebauthnError) -> IdentityError {
    match e {
        WebauthnError::CredentialPossibleCompromise => IdentityError::PasskeyCloned,
        other => IdentityError::PasskeyInvalid(other.to_string()),
    }
}

fn passkey_of(stored: &StoredPasskey) -> Result<Passkey, IdentityError> {
    serde_json::from_value(stored.credential.clone()).map_err(|e| {
        IdentityError::Internal(anyhow::anyhow!("a stored passkey does not read: {e}"))
    })
}

/// The counter a stored passkey last saw, as the library keeps it. A layout without one is a
/// fault, never a counter of 0 (which would let a racing clone in).
fn stored_counter(stored: &StoredPasskey) -> Result<u64, IdentityError> {
    stored.credential["cred"]["counter"]
        .as_u64()
        .ok_or_else(|| {
            IdentityError::Internal(anyhow::anyhow!("a stored passkey has no signature counter"))
        })
}

impl Identity {
    fn relying_party(&self) -> &Webauthn {
        &self.relying_party.webauthn
    }

    /// A challenge any of `user`'s passkeys may answer.
    fn offer(
        &self,
        user: &User,
    ) -> Result<(RequestChallengeResponse, PasskeyAuthentication), IdentityError> {
        let keys = user
            .passkeys
            .iter()
            .map(passkey_of)
            .collect::<Result<Vec<_>, _>>()?;
        self.relying_party()
            .start_passkey_authentication(&keys)
            .map_err(|e| IdentityError::Internal(e.into()))
    }

    /// Starts registering a passkey for `user_id` (the HTTP layer demands a recent sign-in):
    /// the account's own passkeys are excluded, so one authenticator is not registered twice.
    #[tracing::instrument(skip(self), fields(user_id = %user_id))]
    pub async fn begin_passkey_registration(
        &self,
        user_id: UserId,
    ) -> Result<Challenge<CreationChallengeResponse>, IdentityError> {
        let user = self.account(user_id).await?;
        if user.passkeys.len() >= MAX_PASSKEYS {
            return Err(IdentityError::PasskeyLimit);
        }
        let exclude = user
            .passkeys
            .iter()
            .map(|p| passkey_of(p).map(|k| k.cred_id().clone()))
            .collect::<Result<Vec<_>, _>>()?;
        let (mut options, state) = self
            .relying_party()
            .start_passkey_registration(
                user.id.as_uuid(),
                user.email.as_str(),
                &user.name,
                Some(exclude),
            )
            .map_err(|e| IdentityError::Internal(e.into()))?;
        // A passkey that the authenticator can find by itself signs in without naming the
        // account first; authenticators that cannot keep one still register.
        if let Some(selection) = options.public_key.authenticator_selection.as_mut() {
            selection.resident_key = Some(ResidentKeyRequirement::Preferred);
        }
        let id = ceremony_id();
        self.ceremonies
            .put(REGISTER, &id, &Registering { user_id, state }, ttl())
            .await?;
        Ok(Challenge {
            ceremony_id: id,
            options,
        })
    }

    /// Finishes a registration: checks the authenticator's answer, gives the credential to
    /// this account (a credential of another account is refused) and keeps it as `name`.
    #[tracing::instrument(skip(self, credential), fields(user_id = %user_id))]
    pub async fn finish_passkey_registration(
        &self,
        user_id: UserId,
        ceremony: &str,
        name: String,
        credential: &RegisterPublicKeyCredential,
    ) -> Result<StoredPasskey, IdentityError> {
        let Some(Registering {
            user_id: owner,
            state,
        }) = self
            .ceremonies
            .take::<Registering>(REGISTER, ceremony)
            .await?
        else {
            return Err(IdentityError::CeremonyUnknown);
        };
        if owner != user_id {
            return Err(IdentityError::CeremonyUnknown);
        }
        let passkey = self
            .relying_party()
            .finish_passkey_registration(credential, &state)
            .map_err(refused)?;
        let credential_id = credential_key(passkey.cred_id().as_ref());
        let index = sign_in::passkey(&credential_id);
        if self.credentials.claim(&index, user_id).await?.is_err() {
            return Err(IdentityError::PasskeyTaken);
        }
        let now = self.clock.now();
        let stored = StoredPasskey {
            id: uuid::Uuid::now_v7(),
            name,
            credential_id,
            credential: serde_json::to_value(&passkey).map_err(anyhow::Error::from)?,
            created_at: now,
            last_used_at: None,
        };
        let added = self
            .modify_user(user_id, |u| {
                if u.erased || u.banned {
                    return Err(IdentityError::NotFound);
                }
                if u.passkeys.len() >= MAX_PASSKEYS {
                    return Err(IdentityError::PasskeyLimit);
                }
                if !u
                    .passkeys
                    .iter()
                    .any(|p| p.credential_id == stored.credential_id)
                {
                    u.passkeys.push(stored.clone());
                }
                Ok(())
            })
            .await;
        if let Err(e) = added {
            self.credentials.release(&index, user_id).await?;
            return Err(e);
        }
        tracing::info!(passkey = %stored.id, "passkey registered");
        Ok(stored)
    }

    /// Starts a passkey sign-in. With `email`, the account's passkeys are offered (an unknown
    /// account gets the same answer as one without passkeys: a challenge for any passkey);
    /// without, the authenticator picks a discoverable passkey and says whose it is.
    pub async fn begin_passkey_sign_in(
        &self,
        email: Option<&Email>,
    ) -> Result<Challenge<RequestChallengeResponse>, IdentityError> {
        let named = match email {
            Some(email) => self
                .users
                .find_by_email(email)
                .await?
                .map(|v| v.value)
                .filter(|u| !u.passkeys.is_empty() && !u.erased),
            None => None,
        };
        let (options, asserting) = match named {
            Some(user) => {
                let (options, state) = self.offer(&user)?;
                (
                    options,
                    Asserting::Named {
                        user_id: user.id,
                        state,
                    },
                )
            }
            None => {
                let (mut options, state) = self
                    .relying_party()
                    .start_discoverable_authentication()
                    .map_err(|e| IdentityError::Internal(e.into()))?;
                // A sign-in button asks at once; conditional mediation is the page's choice.
                options.mediation = None;
                (options, Asserting::Discoverable { state })
            }
        };
        let id = ceremony_id();
        self.ceremonies.put(SIGN_IN, &id, &asserting, ttl()).await?;
        Ok(Challenge {
            ceremony_id: id,
            options,
        })
    }

    /// Finishes a passkey sign-in and opens a session. Refused assertions count against the
    /// client's address like failed password logins (an unknown or spent ceremony guesses
    /// nothing, so it does not).
    #[tracing::instrument(skip_all)]
    pub async fn finish_passkey_sign_in(
        &self,
        ceremony: &str,
        credential: &PublicKeyCredential,
        client: &str,
    ) -> Result<TokenPair, IdentityError> {
        self.check_address(client).await?;
        let outcome = self.passkey_sign_in(ceremony, credential).await;
        match outcome {
            Ok(user) => {
                self.open_session(&user, vec![AMR_HWK.to_owned(), AMR_MFA.to_owned()], true)
                    .await
            }
            Err(e) => {
                if e.is_refused_passkey() {
                    self.address_failed(client).await;
                }
                tracing::info!(error = %e, "passkey sign-in refused");
                Err(e)
            }
        }
    }

    /// The account a passkey assertion proves, after checking it and recording its counter.
    async fn passkey_sign_in(
        &self,
        ceremony: &str,
        credential: &PublicKeyCredential,
    ) -> Result<User, IdentityError> {
        let asserting = self
            .ceremonies
            .take::<Asserting>(SIGN_IN, ceremony)
            .await?
            .ok_or(IdentityError::CeremonyUnknown)?;
        let credential_id = credential_key(credential.get_credential_id());
        let owner = self
            .credentials
            .owner(&sign_in::passkey(&credential_id))
            .await?
            .ok_or(IdentityError::PasskeyNotRecognised)?;
        let user = self
            .users
            .get(owner)
            .await?
            .map(|v| v.value)
            .filter(|u| !u.erased)
            .ok_or(IdentityError::PasskeyNotRecognised)?;
        let stored = user
            .passkeys
            .iter()
            .find(|p| p.credential_id == credential_id)
            .ok_or(IdentityError::PasskeyNotRecognised)?;
        let key = passkey_of(stored)?;
        let result = match asserting {
            Asserting::Named { user_id, state } => {
                if user_id != user.id {
                    return Err(IdentityError::PasskeyNotRecognised);
                }
                self.relying_party()
                    .finish_passkey_authentication(credential, &state)
            }
            Asserting::Discoverable { state } => {
                // A user handle, when the authenticator gives one, must name the same account.
                if let Some(handle) = credential.get_user_unique_id()
                    && handle != user.id.as_uuid().as_bytes()
                {
                    return Err(IdentityError::PasskeyNotRecognised);
                }
                self.relying_party().finish_discoverable_authentication(
                    credential,
                    state,
                    &[DiscoverableKey::from(&key)],
                )
            }
        }
        .map_err(refused)?;
        if user.banned {
            return Err(IdentityError::Banned);
        }
        self.record_assertion(user.id, &credential_id, &result)
            .await?;
        Ok(user)
    }

    /// Writes the counter and time of an accepted assertion; refuses it when another
    /// assertion with the same or a later counter got in first.
    async fn record_assertion(
        &self,
        user_id: UserId,
        credential_id: &str,
        result: &webauthn_rs::prelude::AuthenticationResult,
    ) -> Result<(), IdentityError> {
        let now = self.clock.now();
        self.modify_user(user_id, |u| {
            let stored = u
                .passkeys
                .iter_mut()
                .find(|p| p.credential_id == credential_id)
                .ok_or(IdentityError::PasskeyNotRecognised)?;
            let seen = stored_counter(stored)?;
            let counter = u64::from(result.counter());
            if (counter > 0 || seen > 0) && counter <= seen {
                return Err(IdentityError::PasskeyCloned);
            }
            let mut key = passkey_of(stored)?;
            key.update_credential(result);
            stored.credential = serde_json::to_value(&key).map_err(anyhow::Error::from)?;
            stored.last_used_at = Some(now);
            Ok(())
        })
        .await
        .map(|_| ())
    }

    /// Starts a step-up with one of the caller's passkeys.
    pub async fn begin_passkey_step_up(
        &self,
        user_id: UserId,
    ) -> Result<Challenge<RequestChallengeResponse>, IdentityError> {
        let user = self.account(user_id).await?;
        if user.passkeys.is_empty() {
            return Err(IdentityError::NoPasskeys);
        }
        let (options, state) = self.offer(&user)?;
        let id = ceremony_id();
        self.ceremonies
            .put(STEP_UP, &id, &Asserting::Named { user_id, state }, ttl())
            .await?;
        Ok(Challenge {
            ceremony_id: id,
            options,
        })
    }

    /// Step-up with a passkey: like a TOTP or SMS code, an access token that sensitive
    /// operations accept for five minutes.
    #[tracing::instrument(skip(self, credential, methods), fields(user_id = %user_id))]
    pub async fn finish_passkey_step_up(
        &self,
        user_id: UserId,
        ceremony: &str,
        credential: &PublicKeyCredential,
        auth_time: chrono::DateTime<chrono::Utc>,
        methods: &[String],
    ) -> Result<String, IdentityError> {
        let key = format!("second-factor:{user_id}");
        self.limit(&key, &super::second_factor::GUESS_QUOTAS)
            .await?;
        let Some(Asserting::Named {
            user_id: owner,
            state,
        }) = self.ceremonies.take::<Asserting>(STEP_UP, ceremony).await?
        else {
            return Err(IdentityError::CeremonyUnknown);
        };
        if owner != user_id {
            return Err(IdentityError::CeremonyUnknown);
        }
        let user = self.account(user_id).await?;
        let credential_id = credential_key(credential.get_credential_id());
        if !user
            .passkeys
            .iter()
            .any(|p| p.credential_id == credential_id)
        {
            return Err(IdentityError::PasskeyNotRecognised);
        }
        let result = self
            .relying_party()
            .finish_passkey_authentication(credential, &state)
            .map_err(refused)?;
        self.record_assertion(user_id, &credential_id, &result)
            .await?;
        self.limiter.reset(&key).await?;
        let mut amr = methods.to_vec();
        for method in [AMR_HWK, AMR_MFA] {
            if !amr.iter().any(|m| m == method) {
                amr.push(method.to_owned());
            }
        }
        let now = self.clock.now();
        let token = self
            .tokens
            .issue_with(user.id, user.role, auth_time, &amr, Some(now), now)?;
        tracing::info!("step-up granted by a passkey");
        Ok(token)
    }

    /// Removes a passkey (the HTTP layer demands a recent sign-in); never the account's last
    /// way to sign in.
    #[tracing::instrument(skip(self), fields(user_id = %user_id))]
    pub async fn remove_passkey(
        &self,
        user_id: UserId,
        passkey: uuid::Uuid,
    ) -> Result<(), IdentityError> {
        let gone = self
            .remove_sign_in_method(user_id, |u| {
                let at = u.passkeys.iter().position(|p| p.id == passkey)?;
                Some(u.passkeys.remove(at))
            })
            .await?;
        self.credentials
            .release(&sign_in::passkey(&gone.credential_id), user_id)
            .await?;
        tracing::info!(passkey = %gone.id, "passkey removed");
        Ok(())
    }
}
