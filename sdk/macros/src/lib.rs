//! The `#[module]` attribute of `telamon-sdk`; use it through `telamon_sdk::module`.

use proc_macro::TokenStream;
use proc_macro2::Span;
use quote::quote;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, ItemImpl, Lit, Meta, Token, Type};

/// Turns `impl MyModule { async fn init(...) }` into `impl Module<Msg> for MyModule`.
///
/// Arguments: `name = "kebab-name"` (required), `message = Type` (required),
/// `description = "..."` (optional). The struct itself is the module's config
/// (`type Config = Self`), so it must implement `Deserialize`; `new` returns it
/// unchanged. The impl block must hold the `init` function and nothing the
/// `Module` trait does not declare.
///
/// ```ignore
/// #[module(name = "echo", message = serde_json::Value)]
/// impl Echo {
///     async fn init(self: Arc<Self>, ctx: Context<serde_json::Value>) -> Result<(), ModuleError> {
///         ctx.handle("echo", |m| async move { Ok::<_, HandlerError>(m) }).await?;
///         Ok(())
///     }
/// }
/// ```
#[proc_macro_attribute]
pub fn module(args: TokenStream, item: TokenStream) -> TokenStream {
    match expand(args.into(), item.into()) {
        Ok(ts) => ts.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn expand(
    args: proc_macro2::TokenStream,
    item: proc_macro2::TokenStream,
) -> syn::Result<proc_macro2::TokenStream> {
    let metas = Punctuated::<Meta, Token![,]>::parse_terminated.parse2(args)?;
    let mut name: Option<String> = None;
    let mut description = String::new();
    let mut message: Option<Type> = None;
    for meta in metas {
        let Meta::NameValue(nv) = meta else {
            return Err(syn::Error::new_spanned(meta, "expected `key = value`"));
        };
        let key = nv
            .path
            .get_ident()
            .map(|i| i.to_string())
            .unwrap_or_default();
        match key.as_str() {
            "name" => name = Some(lit_str(&nv.value)?),
            "description" => description = lit_str(&nv.value)?,
            "message" => {
                let value = &nv.value;
                message = Some(syn::parse2(quote!(#value))?)
            }
            _ => {
                return Err(syn::Error::new_spanned(
                    &nv.path,
                    "unknown argument; expected `name`, `message` or `description`",
                ));
            }
        }
    }
    let name =
        name.ok_or_else(|| syn::Error::new(Span::call_site(), "missing `name = \"...\"`"))?;
    let message =
        message.ok_or_else(|| syn::Error::new(Span::call_site(), "missing `message = Type`"))?;
    let imp: ItemImpl = syn::parse2(item)?;
    if let Some((_, path, _)) = &imp.trait_ {
        return Err(syn::Error::new_spanned(
            path,
            "#[module] goes on an inherent impl block: `impl MyModule { async fn init(...) }`",
        ));
    }
    if !imp
        .items
        .iter()
        .any(|i| matches!(i, syn::ImplItem::Fn(f) if f.sig.ident == "init"))
    {
        return Err(syn::Error::new_spanned(
            &imp.self_ty,
            "#[module] needs an `async fn init` in the impl block",
        ));
    }
    let self_ty = &imp.self_ty;
    let (impl_generics, _, where_clause) = imp.generics.split_for_impl();
    let items = &imp.items;
    let attrs = &imp.attrs;
    Ok(quote! {
        #(#attrs)*
        impl #impl_generics ::telamon_sdk::Module<#message> for #self_ty #where_clause {
            const NAME: &'static str = #name;
            const DESCRIPTION: &'static str = #description;
            type Config = Self;
            fn new(config: Self) -> ::core::result::Result<Self, ::telamon_sdk::ModuleError> {
                ::core::result::Result::Ok(config)
            }
            #(#items)*
        }
    })
}

fn lit_str(e: &Expr) -> syn::Result<String> {
    match e {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => Ok(s.value()),
        other => Err(syn::Error::new_spanned(other, "expected a string literal")),
    }
}
