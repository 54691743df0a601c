//! The most common test mesh: a users app behind its sidecar, and an
//! orders sidecar whose outbound side can call it.

use super::{Certs, Sidecar, SidecarConfig, TestApp};

/// users app <- users sidecar (inbound) <=mTLS= orders sidecar (outbound).
pub struct Pair {
    pub app: TestApp,
    pub users: Sidecar,
    pub orders: Sidecar,
    pub certs: Certs,
}

impl Pair {
    /// Starts the pair with default settings.
    pub async fn start() -> Self {
        Self::start_with("").await
    }

    /// Starts the pair; `users_extra` is YAML under orders' `users`
    /// destination (6-space indent), such as `      timeout: 60s\n`.
    pub async fn start_with(users_extra: &str) -> Self {
        Self::launch(users_extra, "").await
    }

    /// Starts the pair; `orders_extra` is top-level YAML for the orders
    /// sidecar, such as `rate_limits:` or `access_log:`.
    pub async fn start_with_orders(orders_extra: &str) -> Self {
        Self::launch("", orders_extra).await
    }

    async fn launch(users_extra: &str, orders_extra: &str) -> Self {
        let certs = Certs::new();
        let app = TestApp::start().await;
        let users = Sidecar::start(&SidecarConfig::new("users", &certs).inbound(app.addr));
        let orders = Sidecar::start(
            &SidecarConfig::new("orders", &certs)
                .service("users", &[users.inbound()], users_extra)
                .extra(orders_extra),
        );
        Self {
            app,
            users,
            orders,
            certs,
        }
    }
}
