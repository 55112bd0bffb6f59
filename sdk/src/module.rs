//! The trait a module implements.

use std::future::Future;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::context::Context;
use crate::error::ModuleError;
use crate::message::Message;

/// A module: built from its own config table, then initialised with a [`Context`].
///
/// Lifecycle, in order:
///
/// 1. [`new`](Module::new) — once per `[module.<id>]` table whose `class` (or id)
///    is [`NAME`](Module::NAME); the table (minus `class`) is deserialised into
///    [`Config`](Module::Config). Unknown keys should be rejected
///    (`#[serde(deny_unknown_fields)]`) so a typo fails at startup.
/// 2. [`init`](Module::init) — in registration order; subscribe and register
///    handlers here so nothing published later is missed. An error stops
///    startup with a message naming the module.
/// 3. Tasks started with [`Context::run`] begin once every module is initialised.
/// 4. At stop, tasks are cancelled, handlers drain, buses close.
///
/// The [`module`](crate::module) attribute writes `NAME`, `Config = Self` and
/// `new` for the common case; implement the trait by hand for anything else
/// (a separate config type, a fallible constructor, a generic message type).
pub trait Module<M: Message>: Sized + Send + Sync + 'static {
    /// The class name used in config (`class = "…"`), kebab-case.
    const NAME: &'static str;

    /// One line saying what the module does.
    const DESCRIPTION: &'static str = "";

    /// The module's config, deserialised from its `[module.<id>]` table.
    type Config: DeserializeOwned + Send;

    /// Builds the module from its config.
    fn new(config: Self::Config) -> Result<Self, ModuleError>;

    /// Subscribes, registers handlers and starts tasks.
    fn init(
        self: Arc<Self>,
        ctx: Context<M>,
    ) -> impl Future<Output = Result<(), ModuleError>> + Send;
}
