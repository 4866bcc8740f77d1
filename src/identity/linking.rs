//! What an identity asserted by a provider does to accounts: signs in to the account it is
//! linked to; makes a customer account when nobody has its email; and when an account has the
//! email already, is linked to it only after the user proves that account (its password, or
//! one of its passkeys) and only when the provider vouches for the email. Never silently by
//! email alone.
//!
//! A signed-in user can also link an identity to their account, and see and remove the
//! identities linked to it (never the last way to sign in).

use std::time::Duration as StdDuration;

use chrono::Duration;
use serde::{Deserialize, Serialize};
use webauthn_rs::prelude::PublicKeyCredential;

use super::federation::Asserted;
use super::second_factor::SecondFactorProof;
use super::tokens::AMR_FED;
use super::{Identity, IdentityError, TokenPair};
use crate::domain::account::{LinkedIdentity, User};
use crate::domain::identity::{Email, Role};
use crate::domain::ids::UserId;
use crate::store::sign_in;
use crate::store::users::CreateError;

/// How long a link waits for its proof.
pub const LINK_TTL: Duration = Duration::minutes(10);
const LINK: &str = "oidc-link";

/// What signing in with a provider came to.
#[derive(Debug)]
pub enum ProviderSignIn {
    /// Signed in (to a new account when `created`).
    SignedIn { tokens: TokenPair, created: bool },
    /// An account has this email: prove it with `link_token` and its password or a passkey.
    LinkRequired { link_token: String, email: String },
}

/// How the user proves the account a provider identity is to be linked to.
pub enum LinkProof<'a> {
    Password {
        password: String,
        second_factor: Option<&'a SecondFactorProof>,
    },
    Passkey {
        ceremony: &'a str,
        credential: &'a PublicKeyCredential,
    },
}

#[derive(Serialize, Deserialize)]
struct PendingLink {
    user_id: UserId,
    provider: String,
    subject: String,
    email: String,
}

impl Identity {
    /// Signs in with what a provider asserted.
    #[tracing::instrument(skip_all, fields(provider = %asserted.provider))]
    pub async fn sign_in_with_provider(
        &self,
        asserted: &Asserted,
    ) -> Result<ProviderSignIn, IdentityError> {
        let index = sign_in::provider_identity(&asserted.provider, &asserted.subject);
        if let Some(owner) = self.credentials.owner(&index).await? {
            let user = self.attach(owner, asserted).await?;
            let tokens = self
                .open_session(&user, vec![AMR_FED.to_owned()], false)
                .await?;
            tracing::info!(user_id = %user.id, "signed in with a provider");
            return Ok(ProviderSignIn::SignedIn {
                tokens,
                created: false,
            });
        }
        let email = asserted
            .email
            .as_deref()
            .and_then(|e| Email::parse(e).ok())
            .ok_or(IdentityError::ProviderEmailMissing)?;
        if let Some(existing) = self.users.find_by_email(&email).await? {
            if !asserted.email_verified {
                return Err(IdentityError::ProviderEmailUnverified);
            }
            let link_token = super::federation::random_secret();
            let pending = PendingLink {
                user_id: existing.value.id,
                provider: asserted.provider.clone(),
                subject: asserted.subject.clone(),
                email: email.as_str().to_owned(),
            };
            let ttl = LINK_TTL.to_std().unwrap_or(StdDuration::from_secs(600));
            self.ceremonies
                .put(LINK, &link_token, &pending, ttl)
                .await?;
            tracing::info!(user_id = %existing.value.id, "provider identity waits for proof of the account");
            return Ok(ProviderSignIn::LinkRequired {
                link_token,
                email: email.masked(),
            });
        }
        let user = self.create_from_provider(email, asserted).await?;
        let tokens = self
            .open_session(&user, vec![AMR_FED.to_owned()], false)
            .await?;
        Ok(ProviderSignIn::SignedIn {
            tokens,
            created: true,
        })
    }

    /// A new customer account for a provider identity: no password, the email verified when
    /// the provider says so.
    async fn create_from_provider(
        &self,
        email: Email,
        asserted: &Asserted,
    ) -> Result<User, IdentityError> {
        let now = self.clock.now();
        let name = asserted
            .name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty() && !n.chars().any(char::is_control))
            .map(|n| n.chars().take(100).collect::<String>())
            .unwrap_or_else(|| {
                email
                    .as_str()
                    .split('@')
                    .next()
                    .unwrap_or("customer")
                    .to_owned()
            });
        let mut user = User::new(email, String::new(), name, Role::Customer, now);
        user.email_verified = asserted.email_verified;
        user.identities.push(linked(asserted, now));
        let index = sign_in::provider_identity(&asserted.provider, &asserted.subject);
        // The identity is claimed first: of two first sign-ins racing, one makes the account.
        if self.credentials.claim(&index, user.id).await?.is_err() {
            return Err(IdentityError::Contended);
        }
        match self.users.create(&user).await {
            Ok(_) => {
                tracing::info!(user_id = %user.id, "account made by a provider sign-in");
                Ok(user)
            }
            Err(e) => {
                self.credentials.release(&index, user.id).await?;
                Err(match e {
                    CreateError::EmailTaken => IdentityError::EmailTaken,
                    CreateError::Store(s) => s.into(),
                })
            }
        }
    }

    /// The account `owner` with the identity on its row (mending a row a crash left without
    /// it) and its last use recorded.
    async fn attach(&self, owner: UserId, asserted: &Asserted) -> Result<User, IdentityError> {
        let now = self.clock.now();
        let user = self
            .modify_user(owner, |u| {
                if u.erased {
                    return Err(IdentityError::NotFound);
                }
                match u
                    .identities
                    .iter_mut()
                    .find(|i| i.provider == asserted.provider && i.subject == asserted.subject)
                {
                    Some(known) => known.last_used_at = Some(now),
                    None => u.identities.push(linked(asserted, now)),
                }
                Ok(())
            })
            .await?;
        if user.banned {
            return Err(IdentityError::Banned);
        }
        Ok(user)
    }

    /// Links an identity to the signed-in `user_id` (the flow was started by this account).
    #[tracing::instrument(skip_all, fields(user_id = %user_id, provider = %asserted.provider))]
    pub async fn link_provider(
        &self,
        user_id: UserId,
        asserted: &Asserted,
    ) -> Result<LinkedIdentity, IdentityError> {
        self.account(user_id).await?;
        let index = sign_in::provider_identity(&asserted.provider, &asserted.subject);
        if self.credentials.claim(&index, user_id).await?.is_err() {
            return Err(IdentityError::IdentityTaken);
        }
        let user = match self.attach(user_id, asserted).await {
            Ok(user) => user,
            Err(e) => {
                self.credentials.release(&index, user_id).await?;
                return Err(e);
            }
        };
        tracing::info!("provider identity linked");
        user.identities
            .into_iter()
            .find(|i| i.provider == asserted.provider && i.subject == asserted.subject)
            .ok_or_else(|| IdentityError::Internal(anyhow::anyhow!("a linked identity vanished")))
    }

    /// Completes a link waiting for proof: the account's password (and second factor, if it
    /// has one) or one of its passkeys; then the identity is linked and the user signed in.
    #[tracing::instrument(skip_all)]
    pub async fn complete_link(
        &self,
        link_token: &str,
        proof: LinkProof<'_>,
        client: &str,
    ) -> Result<TokenPair, IdentityError> {
        // Read, not taken: a wrong password or a missing second factor may be tried again
        // (as limited as any login); the link is taken once the proof holds.
        let pending = self
            .ceremonies
            .peek::<PendingLink>(LINK, link_token)
            .await?
            .ok_or(IdentityError::CeremonyUnknown)?;
        let asserted = Asserted {
            provider: pending.provider,
            subject: pending.subject,
            email: Some(pending.email.clone()),
            email_verified: true,
            name: None,
        };
        let tokens = match proof {
            LinkProof::Password {
                password,
                second_factor,
            } => {
                let email = Email::parse(&pending.email).map_err(|_| IdentityError::NotFound)?;
                let tokens = self.login(&email, password, second_factor, client).await?;
                if tokens.user_id != pending.user_id {
                    return Err(IdentityError::InvalidCredentials);
                }
                tokens
            }
            LinkProof::Passkey {
                ceremony,
                credential,
            } => {
                let tokens = self
                    .finish_passkey_sign_in(ceremony, credential, client)
                    .await?;
                if tokens.user_id != pending.user_id {
                    return Err(IdentityError::PasskeyNotRecognised);
                }
                tokens
            }
        };
        if self
            .ceremonies
            .take::<PendingLink>(LINK, link_token)
            .await?
            .is_none()
        {
            return Err(IdentityError::CeremonyUnknown);
        }
        self.link_provider(pending.user_id, &asserted).await?;
        Ok(tokens)
    }

    /// Removes a linked identity (the HTTP layer demands a recent sign-in); never the
    /// account's last way to sign in.
    #[tracing::instrument(skip(self), fields(user_id = %user_id))]
    pub async fn remove_identity(
        &self,
        user_id: UserId,
        identity: uuid::Uuid,
    ) -> Result<(), IdentityError> {
        let gone = self
            .remove_sign_in_method(user_id, |u| {
                let at = u.identities.iter().position(|i| i.id == identity)?;
                Some(u.identities.remove(at))
            })
            .await?;
        self.credentials
            .release(
                &sign_in::provider_identity(&gone.provider, &gone.subject),
                user_id,
            )
            .await?;
        tracing::info!(provider = %gone.provider, "provider identity unlinked");
        Ok(())
    }
}

impl Identity {
    /// Takes one way to sign in off `user_id`'s row (what `take` removes; 404 when it finds
    /// nothing), unless it is the account's last one (409 `last_sign_in_method`).
    pub(super) async fn remove_sign_in_method<T>(
        &self,
        user_id: UserId,
        mut take: impl FnMut(&mut User) -> Option<T>,
    ) -> Result<T, IdentityError> {
        let mut removed = None;
        self.modify_user(user_id, |u| {
            let methods = u.sign_in_methods();
            removed = take(u);
            match removed {
                None => Err(IdentityError::NotFound),
                Some(_) if methods <= 1 => Err(IdentityError::LastSignInMethod),
                Some(_) => Ok(()),
            }
        })
        .await?;
        removed.ok_or(IdentityError::NotFound)
    }

    /// Frees the passkeys and provider identities of `user` (as it was before erasure) and
    /// takes them off its row, so none of them signs in to it again.
    pub async fn forget_sign_in_credentials(&self, user: &User) -> Result<(), IdentityError> {
        self.modify_user(user.id, |u| {
            u.passkeys.clear();
            u.identities.clear();
            Ok(())
        })
        .await?;
        for passkey in &user.passkeys {
            self.credentials
                .release(&sign_in::passkey(&passkey.credential_id), user.id)
                .await?;
        }
        for identity in &user.identities {
            self.credentials
                .release(
                    &sign_in::provider_identity(&identity.provider, &identity.subject),
                    user.id,
                )
                .await?;
        }
        Ok(())
    }
}

fn linked(asserted: &Asserted, now: chrono::DateTime<chrono::Utc>) -> LinkedIdentity {
    LinkedIdentity {
        id: uuid::Uuid::now_v7(),
        provider: asserted.provider.clone(),
        subject: asserted.subject.clone(),
        email: asserted.email.clone(),
        linked_at: now,
        last_used_at: Some(now),
    }
}
