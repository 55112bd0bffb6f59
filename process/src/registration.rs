//! Type-erased module classes, so a process can hold modules of many types.

use std::sync::Arc;

use config::Value;
use telamon_sdk::bus::BoxFuture;
use telamon_sdk::{Context, Message, Module, ModuleError};

use crate::error::ConfigError;
use crate::process_config::typed;

/// A module instance that can be initialised.
pub(crate) trait Instance<M>: Send + Sync {
    fn init(&self, ctx: Context<M>) -> BoxFuture<'static, Result<(), ModuleError>>;
}

struct Erased<T>(Arc<T>);

impl<M: Message, T: Module<M>> Instance<M> for Erased<T> {
    fn init(&self, ctx: Context<M>) -> BoxFuture<'static, Result<(), ModuleError>> {
        Box::pin(T::init(self.0.clone(), ctx))
    }
}

/// Builds an instance with id `&str` from its config table.
pub(crate) type Builder<M> = fn(&str, Value) -> Result<Box<dyn Instance<M>>, BuildError>;

/// A registered module class.
pub(crate) struct Registration<M> {
    pub(crate) name: &'static str,
    pub(crate) description: &'static str,
    pub(crate) build: Builder<M>,
}

/// Why an instance could not be built.
pub(crate) enum BuildError {
    Config(ConfigError),
    Module(ModuleError),
}

fn build<M: Message, T: Module<M>>(
    id: &str,
    config: Value,
) -> Result<Box<dyn Instance<M>>, BuildError> {
    let config: T::Config = typed(&format!("module.{id}"), config).map_err(BuildError::Config)?;
    let module = T::new(config).map_err(BuildError::Module)?;
    Ok(Box::new(Erased(Arc::new(module))))
}

impl<M: Message> Registration<M> {
    pub(crate) fn of<T: Module<M>>() -> Self {
        Registration {
            name: T::NAME,
            description: T::DESCRIPTION,
            build: build::<M, T>,
        }
    }
}
