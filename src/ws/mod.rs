//! WebSocket sessions (courier, order tracking, vendor and admin streams), each an
//! actix-web-actors session actor. The streams arrive with couriers and orders; open sessions
//! are counted in the `hexmarket_ws_sessions` gauge.
