//! The cart actor: owns one cart, applies changes one at a time, and persists each change
//! (compare-and-set on the cart's version) before acknowledging it.
//!
//! If another activation of the same cart (on another node, or one that outlived a
//! passivation race) wrote first, the save conflicts; the actor adopts the stored cart,
//! re-applies the change to it and saves again, so no update is ever lost.

use std::future::Future;
use std::pin::Pin;

use actix::prelude::*;

use super::registry::{Entity, Passivate};
use crate::domain::cart::{Cart, CartCommand, CartError};
use crate::domain::ids::CartId;
use crate::store::carts::{CartRepo, Versioned};
use crate::store::{StoreError, Version};

/// How many times a change is re-applied after losing a write race before giving up.
const SAVE_ATTEMPTS: usize = 8;

/// One customer's or guest's cart.
pub struct CartActor {
    id: CartId,
    repo: CartRepo,
    cart: Cart,
    version: Version,
}

impl Actor for CartActor {
    type Context = Context<Self>;
}

impl Entity for CartActor {
    type Id = CartId;
    type Deps = CartRepo;
    const KIND: &'static str = "cart";

    fn activate(
        id: CartId,
        repo: CartRepo,
    ) -> Pin<Box<dyn Future<Output = Result<Self, StoreError>> + Send>> {
        Box::pin(async move {
            let Versioned { version, value } = repo.load(id).await?;
            Ok(CartActor {
                id,
                repo,
                cart: value,
                version,
            })
        })
    }
}

/// Returns the cart as it is.
#[derive(Debug, Message)]
#[rtype(result = "Cart")]
pub struct GetCart;

/// Applies a change and persists it; answers with the cart after the change.
#[derive(Debug, Message)]
#[rtype(result = "Result<Cart, ChangeError>")]
pub struct ChangeCart(pub CartCommand);

/// Why a change was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error(transparent)]
    Invalid(#[from] CartError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the cart kept changing under this write; try again")]
    Contended,
}

impl Handler<GetCart> for CartActor {
    type Result = MessageResult<GetCart>;

    fn handle(&mut self, _: GetCart, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.cart.clone())
    }
}

impl Handler<ChangeCart> for CartActor {
    type Result = AtomicResponse<Self, Result<Cart, ChangeError>>;

    #[tracing::instrument(name = "cart.change", skip_all, fields(cart_id = %self.id))]
    fn handle(&mut self, ChangeCart(command): ChangeCart, _: &mut Context<Self>) -> Self::Result {
        let repo = self.repo.clone();
        let id = self.id;
        let base = Versioned {
            version: self.version,
            value: self.cart.clone(),
        };
        // AtomicResponse: the next message waits until this change is persisted or refused.
        AtomicResponse::new(Box::pin(
            save_with_retry(repo, id, base, command)
                .into_actor(self)
                .map(|(latest, outcome), actor, _| {
                    actor.version = latest.version;
                    actor.cart = latest.value;
                    outcome
                }),
        ))
    }
}

impl Handler<Passivate> for CartActor {
    type Result = ();

    fn handle(&mut self, _: Passivate, ctx: &mut Context<Self>) {
        // Every change was persisted before it was acknowledged: nothing to write.
        tracing::debug!(cart_id = %self.id, "cart passivated");
        ctx.stop();
    }
}

/// Applies `command` to `base` and saves it, re-applying to the stored cart after each lost
/// race. Returns the newest known state (to adopt) and the outcome for the caller.
async fn save_with_retry(
    repo: CartRepo,
    id: CartId,
    mut base: Versioned<Cart>,
    command: CartCommand,
) -> (Versioned<Cart>, Result<Cart, ChangeError>) {
    for _ in 0..SAVE_ATTEMPTS {
        let mut next = base.value.clone();
        if let Err(e) = next.apply(&command) {
            return (base, Err(e.into()));
        }
        match repo.save(id, base.version, &next).await {
            Ok(Ok(version)) => {
                let answer = next.clone();
                return (
                    Versioned {
                        version,
                        value: next,
                    },
                    Ok(answer),
                );
            }
            Ok(Err(current)) => {
                base = current;
                // Two writers retrying in lockstep keep colliding; a little jitter parts them.
                let jitter = rand::random_range(0..2_000u64);
                tokio::time::sleep(std::time::Duration::from_micros(jitter)).await;
            }
            // The outcome of a failed write is unknown: reload before the next change.
            Err(e) => {
                let latest = repo.load(id).await.unwrap_or(base);
                return (latest, Err(e.into()));
            }
        }
    }
    (base, Err(ChangeError::Contended))
}
