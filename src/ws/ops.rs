//! `/ws/admin/ops`: live operations for admins. Every 2 s: couriers (available and busy) and
//! open orders per H3 cell at resolution 7, and the orders nobody has taken yet.

use std::collections::BTreeMap;
use std::time::Duration;

use actix::prelude::*;
use actix_web::{HttpRequest, HttpResponse, web};
use actix_web_actors::ws;
use h3o::Resolution;

use super::hygiene::{self, Hygiene, LiveSession, TokenBucket, send_error};
use crate::error_code::ErrorCode;
use crate::streams::frames::{CellOps, OpsPicture};
use crate::web::gate::ConnectionGuard;
use crate::web::{ApiError, AppState};

/// How often the picture is sent.
pub const OPS_EVERY: Duration = Duration::from_secs(2);
/// Resolution of the cells the picture is drawn in (≈ 1.2 km edges).
pub const OPS_RESOLUTION: Resolution = Resolution::Seven;
/// Open orders looked at per picture, at most.
const MAX_OPEN: usize = 50_000;

/// Draws the picture from this node's courier index, the open orders and the dispatch queue.
pub async fn picture(state: &AppState) -> Result<OpsPicture, ApiError> {
    let mut cells: BTreeMap<h3o::CellIndex, CellOps> = BTreeMap::new();
    for count in state.live.index.per_cell(OPS_RESOLUTION) {
        let cell = cells.entry(count.cell).or_default();
        cell.available_couriers += count.available;
        cell.busy_couriers += count.busy;
    }
    for order in state.live.open.list(MAX_OPEN).await? {
        let location = match state.catalog.directory.get(order.vendor_id) {
            Some(vendor) => Some(vendor.location),
            None => state
                .catalog
                .repo
                .vendor(order.vendor_id)
                .await?
                .map(|v| v.value.location),
        };
        if let Some(location) = location {
            cells
                .entry(location.cell_at(OPS_RESOLUTION))
                .or_default()
                .open_orders += 1;
        }
    }
    let cells = cells
        .into_iter()
        .map(|(cell, mut ops)| {
            ops.cell = cell.to_string();
            ops
        })
        .collect();
    Ok(OpsPicture {
        at: state.catalog.clock.now(),
        cells,
        unassigned: state.live.dispatcher.unassigned().await?,
    })
}

/// One admin's operations screen.
pub struct OpsSession {
    state: web::Data<AppState>,
    hygiene: Hygiene,
    _guard: ConnectionGuard,
}

/// `GET /ws/admin/ops` — upgrades an admin's connection.
pub async fn open(
    req: HttpRequest,
    stream: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (user, guard) = state.ws.open(&req, &state.identity.tokens).await?;
    user.require_admin()?;
    let session = OpsSession {
        hygiene: Hygiene::of_session(&state.ws, TokenBucket::watcher(), &user),
        state,
        _guard: guard,
    };
    super::upgrade(session, &req, stream)
}

impl OpsSession {
    fn send_picture(&self, ctx: &mut ws::WebsocketContext<Self>) {
        let state = self.state.clone();
        ctx.spawn(
            actix::fut::wrap_future(async move { picture(&state).await }).map(
                |outcome, _: &mut Self, ctx: &mut ws::WebsocketContext<Self>| match outcome {
                    Ok(picture) => {
                        if let Some(frame) = super::tagged("ops", &picture) {
                            ctx.text(frame);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "operations picture not drawn");
                        send_error(
                            ctx,
                            ErrorCode::Unavailable,
                            "the picture could not be drawn; retrying",
                        );
                    }
                },
            ),
        );
    }
}

impl Actor for OpsSession {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        hygiene::start(self, ctx);
        ctx.add_stream(super::closing(&self.state));
        self.send_picture(ctx);
        ctx.run_interval(OPS_EVERY, |session, ctx| session.send_picture(ctx));
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for OpsSession {
    fn handle(&mut self, frame: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        hygiene::handle_frame(self, frame, ctx);
    }
}

impl LiveSession for OpsSession {
    fn hygiene(&mut self) -> &mut Hygiene {
        &mut self.hygiene
    }
}

super::closes_when_the_node_stops!(OpsSession);
