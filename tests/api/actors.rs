//! The actor runtime: activation from the store, idle passivation, recovery after a panic,
//! persistence on shutdown, two activations of one cart losing no update, and an actor brought
//! to its caller's thread with its state.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use hexmarket::actors::cart::{CartActor, ChangeCart, ChangeError, GetCart};
use hexmarket::actors::{ActorError, ArbiterPool, Entity, Passivate, Registry};
use hexmarket::domain::cart::{Cart, CartCommand, Quantity};
use hexmarket::domain::ids::{CartId, ProductId};
use hexmarket::store::carts::CartRepo;
use hexmarket::store::embedded::EmbeddedStore;
use hexmarket::store::{SharedStore, StoreError};
use tempfile::TempDir;

fn store() -> (SharedStore, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store: SharedStore = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    (store, dir)
}

fn add(product_id: ProductId, n: u32) -> ChangeCart {
    ChangeCart(CartCommand::Add {
        product_id,
        quantity: Quantity::try_from(n).unwrap(),
    })
}

const LONG_IDLE: Duration = Duration::from_secs(600);

#[actix_web::test]
async fn the_first_message_activates_the_actor_with_its_stored_state() {
    let (store, _dir) = store();
    let repo = CartRepo::new(store.clone());
    let id = CartId::new();
    let product = ProductId::new();
    let mut cart = Cart::default();
    cart.apply(&add(product, 3).0).unwrap();
    assert!(repo.save(id, 0, &cart).await.unwrap().is_ok());

    let carts = Registry::<CartActor>::new(repo, ArbiterPool::new(2), LONG_IDLE);
    assert_eq!(carts.live(), 0);
    let loaded = carts.send(id, GetCart).await.unwrap();
    assert_eq!(loaded.quantity_of(product), 3);
    assert_eq!(carts.live(), 1);
}

#[actix_web::test]
async fn an_idle_actor_is_passivated_and_comes_back_with_its_state() {
    let (store, _dir) = store();
    let carts = Registry::<CartActor>::new(
        CartRepo::new(store),
        ArbiterPool::new(2),
        Duration::from_millis(200),
    );
    let id = CartId::new();
    let product = ProductId::new();
    carts.send(id, add(product, 2)).await.unwrap().unwrap();
    assert_eq!(carts.live(), 1);

    let mut waited = Duration::ZERO;
    while carts.live() > 0 {
        assert!(
            waited < Duration::from_secs(5),
            "the idle actor was not passivated"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += Duration::from_millis(50);
    }
    let cart = carts.send(id, add(product, 1)).await.unwrap().unwrap();
    assert_eq!(cart.quantity_of(product), 3);
}

#[actix_web::test]
async fn shutdown_passivates_every_live_actor() {
    let (store, _dir) = store();
    let carts =
        Registry::<CartActor>::new(CartRepo::new(store.clone()), ArbiterPool::new(2), LONG_IDLE);
    let product = ProductId::new();
    let ids: Vec<CartId> = (0..20).map(|_| CartId::new()).collect();
    for id in &ids {
        carts.send(*id, add(product, 1)).await.unwrap().unwrap();
    }
    assert_eq!(carts.live(), 20);
    carts.shutdown(Duration::from_secs(5)).await;
    assert_eq!(carts.live(), 0);
    let repo = CartRepo::new(store);
    for id in ids {
        assert_eq!(repo.load(id).await.unwrap().value.quantity_of(product), 1);
    }
}

#[actix_web::test]
async fn two_activations_of_one_cart_lose_no_update() {
    let (store, _dir) = store();
    // Two registries over one store stand for two nodes that both activated the cart.
    let node_a =
        Registry::<CartActor>::new(CartRepo::new(store.clone()), ArbiterPool::new(1), LONG_IDLE);
    let node_b =
        Registry::<CartActor>::new(CartRepo::new(store.clone()), ArbiterPool::new(1), LONG_IDLE);
    let id = CartId::new();
    let product = ProductId::new();
    node_a.send(id, GetCart).await.unwrap();
    node_b.send(id, GetCart).await.unwrap();

    let writes = |node: Registry<CartActor>| async move {
        let mut acknowledged = 0;
        for _ in 0..40 {
            match node.send(id, add(product, 1)).await.unwrap() {
                Ok(_) => acknowledged += 1,
                // Giving up after many lost races is allowed; anything else is not.
                Err(ChangeError::Contended) => {}
                Err(other) => panic!("unexpected failure: {other}"),
            }
        }
        acknowledged
    };
    let (a, b) = tokio::join!(
        actix::spawn(writes(node_a.clone())),
        actix::spawn(writes(node_b.clone()))
    );
    let acknowledged = a.unwrap() + b.unwrap();
    assert!(
        acknowledged >= 60,
        "only {acknowledged} of 80 changes got through"
    );

    let stored = CartRepo::new(store).load(id).await.unwrap();
    assert_eq!(
        stored.value.quantity_of(product),
        acknowledged,
        "an acknowledged update was lost"
    );
    // Each node's actor ends up with the newest state it saw, never a lost one.
    let next = node_a.send(id, add(product, 1)).await.unwrap().unwrap();
    assert_eq!(next.quantity_of(product), acknowledged + 1);
}

/// A cart-like entity whose handler can be made to panic, and whose changes can be kept in
/// memory until it is passivated.
struct Fragile {
    id: CartId,
    repo: CartRepo,
    cart: Cart,
    version: u64,
    /// The cart holds changes the store does not have yet.
    unsaved: bool,
    /// Tells this activation from the next.
    activation: u64,
}

impl Actor for Fragile {
    type Context = Context<Self>;
}

impl Entity for Fragile {
    type Id = CartId;
    type Deps = CartRepo;
    const KIND: &'static str = "fragile";

    fn activate(
        id: CartId,
        repo: CartRepo,
    ) -> Pin<Box<dyn Future<Output = Result<Self, StoreError>> + Send>> {
        Box::pin(async move {
            let loaded = repo.load(id).await?;
            Ok(Fragile {
                id,
                repo,
                cart: loaded.value,
                version: loaded.version,
                unsaved: false,
                activation: rand::random(),
            })
        })
    }
}

impl Handler<Passivate> for Fragile {
    type Result = ResponseActFuture<Self, ()>;
    fn handle(&mut self, _: Passivate, _: &mut Context<Self>) -> Self::Result {
        let (repo, id, version, cart) =
            (self.repo.clone(), self.id, self.version, self.cart.clone());
        let unsaved = self.unsaved;
        Box::pin(
            async move {
                if unsaved {
                    // Slow to persist: whoever loads the cart next must wait for this.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    repo.save(id, version, &cart).await.unwrap().unwrap();
                }
            }
            .into_actor(self)
            .map(|(), _, ctx| ctx.stop()),
        )
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct AddUnsaved(ProductId);

impl Handler<AddUnsaved> for Fragile {
    type Result = ();
    fn handle(&mut self, AddUnsaved(product): AddUnsaved, _: &mut Context<Self>) {
        self.cart.apply(&add(product, 1).0).unwrap();
        self.unsaved = true;
    }
}

/// The thread an actor runs on, and which activation it is.
#[derive(Message)]
#[rtype(result = "(std::thread::ThreadId, u64)")]
struct WhereAreYou;

impl Handler<WhereAreYou> for Fragile {
    type Result = MessageResult<WhereAreYou>;
    fn handle(&mut self, _: WhereAreYou, _: &mut Context<Self>) -> Self::Result {
        MessageResult((std::thread::current().id(), self.activation))
    }
}

#[derive(Message)]
#[rtype(result = "Cart")]
struct AddAndSave(ProductId);

impl Handler<AddAndSave> for Fragile {
    type Result = AtomicResponse<Self, Cart>;
    fn handle(&mut self, AddAndSave(product): AddAndSave, _: &mut Context<Self>) -> Self::Result {
        let mut next = self.cart.clone();
        next.apply(&add(product, 1).0).unwrap();
        let (repo, id, version) = (self.repo.clone(), self.id, self.version);
        AtomicResponse::new(Box::pin(
            async move {
                let saved = repo.save(id, version, &next).await.unwrap().unwrap();
                (saved, next)
            }
            .into_actor(self)
            .map(|(version, next), actor, _| {
                actor.version = version;
                actor.cart = next.clone();
                next
            }),
        ))
    }
}

#[derive(Message)]
#[rtype(result = "Cart")]
struct Peek;

impl Handler<Peek> for Fragile {
    type Result = MessageResult<Peek>;
    fn handle(&mut self, _: Peek, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.cart.clone())
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Explode;

impl Handler<Explode> for Fragile {
    type Result = ();
    fn handle(&mut self, _: Explode, _: &mut Context<Self>) {
        // Unpersisted damage, then a panic: the next activation must not see either.
        self.cart = Cart::default();
        panic!("handler bug");
    }
}

#[actix_web::test]
async fn after_a_handler_panic_the_next_message_succeeds_with_the_persisted_state() {
    let (store, _dir) = store();
    let registry = Registry::<Fragile>::new(CartRepo::new(store), ArbiterPool::new(1), LONG_IDLE);
    let id = CartId::new();
    let product = ProductId::new();
    registry.send(id, AddAndSave(product)).await.unwrap();
    registry.send(id, AddAndSave(product)).await.unwrap();

    let crashed = registry.send(id, Explode).await;
    assert!(
        matches!(crashed, Err(ActorError::Crashed)),
        "got {crashed:?}"
    );

    let cart = registry.send(id, Peek).await.unwrap();
    assert_eq!(
        cart.quantity_of(product),
        2,
        "state reloaded from the store"
    );
    let cart = registry.send(id, AddAndSave(product)).await.unwrap();
    assert_eq!(cart.quantity_of(product), 3);
    // The same arbiter thread keeps serving other actors after the panic.
    let other = registry
        .send(CartId::new(), AddAndSave(product))
        .await
        .unwrap();
    assert_eq!(other.quantity_of(product), 1);
}

#[actix_web::test]
async fn an_actor_running_elsewhere_is_brought_to_the_callers_thread_with_its_state() {
    let (store, _dir) = store();
    let registry = Registry::<Fragile>::new(CartRepo::new(store), ArbiterPool::new(1), LONG_IDLE);
    let here = std::thread::current().id();
    let id = CartId::new();
    let product = ProductId::new();
    // Activated on the pool, with one change stored and one only in its memory.
    registry.send(id, AddAndSave(product)).await.unwrap();
    registry.send(id, AddUnsaved(product)).await.unwrap();
    let (pool_thread, _) = registry.send(id, WhereAreYou).await.unwrap();
    assert_ne!(pool_thread, here);

    // A message sent while the actor moves waits until it is running here, with the change
    // it held in memory.
    let (moved, during) = tokio::join!(registry.bring_here(id), registry.send(id, Peek));
    moved.unwrap();
    assert_eq!(during.unwrap().quantity_of(product), 2);
    let (thread, activation) = registry.send(id, WhereAreYou).await.unwrap();
    assert_eq!(thread, here, "the actor runs on the caller's thread");
    assert_eq!(registry.live(), 1);

    // Already here: it stays the same actor.
    registry.bring_here(id).await.unwrap();
    assert_eq!(
        registry.send(id, WhereAreYou).await.unwrap(),
        (here, activation)
    );
    // From a thread with no arbiter, nothing moves either.
    let remote = registry.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(remote.bring_here(id)).unwrap();
    })
    .join()
    .unwrap();
    assert_eq!(
        registry.send(id, WhereAreYou).await.unwrap(),
        (here, activation)
    );
}
