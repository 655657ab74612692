//! The component registry: component names mapped to their type-erased builders. The components
//! crate has one `registry()` listing every real component:
//!
//! ```text
//! pub fn registry() -> flow_runtime::Registry {
//!     let mut r = flow_runtime::Registry::new();
//!     r.register::<discovery::relabel::Relabel>("discovery.relabel");
//!     r.register::<pyroscope::write::Write>("pyroscope.write");
//!     r
//! }
//! ```

use crate::component::{
    CancellationToken, Component, Health, HttpRequest, HttpResponse, Options, Resource,
    ResourceError,
};
use river_parser::eval::BodyValue;
use river_parser::{Diagnostic, Diagnostics, Span, Validate as _, Value};
use std::any::Any;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// Decoded arguments of some component type.
pub(crate) type AnyArgs = Box<dyn Any + Send + Sync>;
pub(crate) type RunFuture = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// Type-erased operations on one component type.
pub(crate) trait Builder: Send + Sync {
    /// Decodes an evaluated block body; `span` (the block name) is used for errors about the
    /// body as a whole, such as a missing required attribute.
    fn decode(&self, body: &BodyValue, span: Span) -> Result<AnyArgs, Diagnostics>;
    /// Like `decode`, telling a decoding error from a failed [`river_parser::Validate`] rule
    /// (used by [`crate::validate`]).
    fn check(&self, body: &BodyValue, span: Span) -> Result<(), Checked>;
    fn args_equal(&self, a: &AnyArgs, b: &AnyArgs) -> bool;
    fn build(&self, opts: Options, args: AnyArgs) -> anyhow::Result<Arc<dyn Instance>>;
}

/// Why [`Builder::check`] refused a body.
pub(crate) enum Checked {
    /// The body does not decode (unknown or missing argument, wrong type).
    Decode(Diagnostics),
    /// It decodes, but a `Validate` rule failed.
    Invalid(Diagnostic),
}

/// Type-erased operations on one built component.
pub(crate) trait Instance: Send + Sync {
    fn run(&self, cancel: CancellationToken) -> RunFuture;
    fn update(&self, args: AnyArgs) -> anyhow::Result<()>;
    fn health(&self) -> Option<Health>;
    fn debug_info(&self) -> Option<Value>;
    fn resource(
        &self,
        name: &str,
        query: &BTreeMap<String, String>,
    ) -> Result<Resource, ResourceError>;
    fn serve_http(&self, req: &HttpRequest) -> Option<HttpResponse>;
    fn http_root_prefixes(&self) -> &'static [&'static str];
}

struct TypedBuilder<C>(std::marker::PhantomData<fn() -> C>);

fn downcast<C: Component>(args: AnyArgs) -> anyhow::Result<C::Arguments> {
    args.downcast::<C::Arguments>()
        .map(|b| *b)
        .map_err(|_| anyhow::anyhow!("internal error: arguments of the wrong type"))
}

impl<C: Component> Builder for TypedBuilder<C> {
    fn decode(&self, body: &BodyValue, span: Span) -> Result<AnyArgs, Diagnostics> {
        let args: C::Arguments = river_parser::decode::decode_body_validated(body, span)?;
        Ok(Box::new(args))
    }

    fn check(&self, body: &BodyValue, span: Span) -> Result<(), Checked> {
        let args: C::Arguments =
            river_parser::decode::decode_body_at(body, span).map_err(Checked::Decode)?;
        args.validate()
            .map_err(|inv| Checked::Invalid(Diagnostic::new(inv.span_in(body, span), inv.message)))
    }

    fn args_equal(&self, a: &AnyArgs, b: &AnyArgs) -> bool {
        match (
            a.downcast_ref::<C::Arguments>(),
            b.downcast_ref::<C::Arguments>(),
        ) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        }
    }

    fn build(&self, opts: Options, args: AnyArgs) -> anyhow::Result<Arc<dyn Instance>> {
        let args = downcast::<C>(args)?;
        let c = C::build(opts, args)?;
        Ok(Arc::new(TypedInstance(Arc::new(c))))
    }
}

struct TypedInstance<C>(Arc<C>);

impl<C: Component> Instance for TypedInstance<C> {
    fn run(&self, cancel: CancellationToken) -> RunFuture {
        Box::pin(C::run(self.0.clone(), cancel))
    }

    fn update(&self, args: AnyArgs) -> anyhow::Result<()> {
        self.0.update(downcast::<C>(args)?)
    }

    fn health(&self) -> Option<Health> {
        self.0.health()
    }

    fn debug_info(&self) -> Option<Value> {
        self.0.debug_info()
    }

    fn resource(
        &self,
        name: &str,
        query: &BTreeMap<String, String>,
    ) -> Result<Resource, ResourceError> {
        self.0.resource(name, query)
    }

    fn serve_http(&self, req: &HttpRequest) -> Option<HttpResponse> {
        self.0.serve_http(req)
    }

    fn http_root_prefixes(&self) -> &'static [&'static str] {
        self.0.http_root_prefixes()
    }
}

/// The names of all components known to a runtime, with their builders.
#[derive(Clone, Default)]
pub struct Registry {
    builders: BTreeMap<String, Arc<dyn Builder>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.builders.keys()).finish()
    }
}

impl Registry {
    pub fn new() -> Self {
        Registry::default()
    }

    /// Registers component type `C` under `name` (for example `discovery.relabel`). A later
    /// registration under the same name replaces the earlier one.
    pub fn register<C: Component>(&mut self, name: &str) -> &mut Self {
        self.builders.insert(
            name.to_string(),
            Arc::new(TypedBuilder::<C>(std::marker::PhantomData)),
        );
        self
    }

    /// Builder-style [`Registry::register`].
    pub fn with<C: Component>(mut self, name: &str) -> Self {
        self.register::<C>(name);
        self
    }

    /// Adds every component of `other` (replacing same-named ones).
    pub fn extend(&mut self, other: Registry) {
        self.builders.extend(other.builders);
    }

    /// Registered component names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.builders.keys().map(|s| s.as_str())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.builders.contains_key(name)
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Arc<dyn Builder>> {
        self.builders.get(name)
    }
}

/// The test components of [`crate::testing`] (`test.pulse`, `test.sink`, `test.slow_stop`, ...)
/// when this crate is built with the `testing` feature, `None` otherwise: `rill run
/// --feature.test-components` asks for them this way, so a release build of rill neither contains
/// nor accepts them.
pub fn test_components() -> Option<Registry> {
    #[cfg(feature = "testing")]
    {
        Some(crate::testing::registry())
    }
    #[cfg(not(feature = "testing"))]
    {
        None
    }
}
