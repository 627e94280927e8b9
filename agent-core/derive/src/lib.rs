//! `#[derive(Message)]` and `#[derive(WireSchema)]` for [agent-core](https://docs.rs/agent-core).
//!
//! `Message` gives the type its message name and a schema computed once, from the type's
//! `schemars::JsonSchema` (which must be derived too): see `agent_core::message` for what
//! the canonical schema and its digest cover. `WireSchema` is for the structs and enums a
//! message contains: it checks them the same way, and `Message` requires it of the type of
//! every field (a nested type's attributes are out of sight of the message's derive, so each
//! type checks its own and the message checks that each one did).
//!
//! `#[message(name = "...")]` on the type overrides the name. Refused at compile time,
//! because no schema would describe their wire form: generic messages, unions, a field whose
//! type does not implement `agent_core::message::WireSchema`, `#[serde(with /
//! serialize_with / deserialize_with / getter)]` without a `#[schemars(with = ...)]` or
//! `#[schemars(schema_with = ...)]` beside it, `#[serde(from / into / try_from)]` on the
//! type, `#[schemars(rename / skip / flatten / ...)]` options that reshape the schema
//! without serde's doing the same to the wire form, and `#[serde(rename(serialize = ..))]`,
//! `rename_all(..)` or `skip_serializing` / `skip_deserializing` that make the written form
//! differ from the read one (the schema describes what is read).

use proc_macro::TokenStream;
use quote::quote;
use syn::{parse_macro_input, parse_quote, Data, DeriveInput};

/// Derives `agent_core::Message`: a stable message name and its canonical schema and digest.
/// It derives `agent_core::message::WireSchema` too, so a message can be nested in another.
#[proc_macro_derive(Message, attributes(message))]
pub fn derive_message(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match expand_message(&input) {
        Ok(tokens) => tokens.into(),
        Err(err) => err.to_compile_error().into(),
    }
}

/// Derives `agent_core::message::WireSchema` for a struct or enum used inside a message:
/// refuses the serde attributes its JSON Schema would not describe, and requires
/// `WireSchema` of each of its fields' types in turn.
#[proc_macro_derive(WireSchema)]
pub fn derive_wire_schema(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match wire_schema(&input) {
        Ok(tokens) => tokens.into(),
        Err(err) => err.to_compile_error().into(),
    }
}

fn expand_message(input: &DeriveInput) -> syn::Result<proc_macro2::TokenStream> {
    if !input.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &input.generics,
            "#[derive(Message)] does not support generic types: a schema digest must be fixed",
        ));
    }
    let ident = &input.ident;
    let name = type_name_override(input)?.unwrap_or_else(|| ident.to_string());
    let wire_schema = wire_schema(input)?;
    Ok(quote! {
        #wire_schema

        impl ::agent_core::Message for #ident {
            const NAME: &'static str = #name;
            fn schema() -> &'static ::agent_core::message::MessageSchema {
                static SCHEMA: ::std::sync::OnceLock<::agent_core::message::MessageSchema> =
                    ::std::sync::OnceLock::new();
                SCHEMA.get_or_init(|| ::agent_core::message::MessageSchema::of::<Self>(#name))
            }
        }
    })
}

/// `impl WireSchema` for the type, once its own serde attributes pass, and a check (in a
/// function never called) that the type of each field on the wire implements it too.
fn wire_schema(input: &DeriveInput) -> syn::Result<proc_macro2::TokenStream> {
    let ident = &input.ident;
    check_custom_serde(&serde_options(&input.attrs), ident)?;
    let fields: Vec<&syn::Field> = match &input.data {
        Data::Struct(data) => data.fields.iter().collect(),
        Data::Enum(data) => {
            for variant in &data.variants {
                check_custom_serde(&serde_options(&variant.attrs), &variant.ident)?;
            }
            data.variants.iter().flat_map(|variant| variant.fields.iter()).collect()
        }
        Data::Union(_) => {
            return Err(syn::Error::new_spanned(
                ident,
                "#[derive(Message)] and #[derive(WireSchema)] do not support unions",
            ))
        }
    };
    let mut nested = Vec::new();
    for field in fields {
        let options = serde_options(&field.attrs);
        check_custom_serde(&options, field)?;
        // A skipped field is not on the wire; a described one's schema is the one given.
        if !options.skipped && !options.described {
            nested.push(&field.ty);
        }
    }
    let mut generics = input.generics.clone();
    for param in generics.type_params_mut() {
        param.bounds.push(parse_quote!(::agent_core::message::WireSchema));
    }
    let (impl_generics, type_generics, where_clause) = generics.split_for_impl();
    Ok(quote! {
        impl #impl_generics ::agent_core::message::WireSchema for #ident #type_generics #where_clause {}

        const _: () = {
            #[allow(dead_code, clippy::extra_unused_type_parameters)]
            fn nested_types_are_wire_schemas #impl_generics () #where_clause {
                #( ::agent_core::message::wire_schema::<#nested>(); )*
            }
        };
    })
}

/// The options of a field's or variant's `#[serde]` and `#[schemars]` attributes that
/// decide whether its schema describes its wire form.
#[derive(Default)]
struct SerdeOptions {
    /// A custom (de)serialiser: `with`, `serialize_with`, `deserialize_with` or `getter`.
    custom: Option<String>,
    /// `#[schemars(with = ...)]` or `#[schemars(schema_with = ...)]`: the schema is given.
    described: bool,
    /// `#[serde(skip)]`, or skipped both ways: not on the wire.
    skipped: bool,
    /// A `#[schemars(...)]` option that changes the schema's shape (`rename`, `skip`,
    /// `flatten`, ...): schemars applies it, serde does not, so the two would disagree.
    schema_only: Option<String>,
    /// `#[serde(from / into / try_from)]` on the type: its wire form is another type's.
    converted: Option<String>,
    /// An option that makes the written form differ from the read one (`rename(serialize =
    /// ..)` alone or with another `deserialize` name, `skip_serializing` alone, ...): the
    /// schema describes what is read, so a change to what is written would keep the digest.
    one_sided: Option<String>,
}

/// `#[schemars]` options that change the shape of the schema; serde's namesakes change the
/// wire form, which is where they belong.
const SCHEMA_SHAPING: [&str; 17] = [
    "rename",
    "rename_all",
    "rename_all_fields",
    "skip",
    "skip_serializing",
    "skip_deserializing",
    "skip_serializing_if",
    "default",
    "flatten",
    "tag",
    "content",
    "untagged",
    "transparent",
    "from",
    "into",
    "try_from",
    "transform",
];

fn serde_options(attrs: &[syn::Attribute]) -> SerdeOptions {
    let mut options = SerdeOptions::default();
    let (mut skip_serializing, mut skip_deserializing) = (false, false);
    for attr in attrs {
        let is_serde = attr.path().is_ident("serde");
        if !is_serde && !attr.path().is_ident("schemars") {
            continue;
        }
        // A malformed attribute is serde's or schemars' to report, with a better message
        // than ours; what was read before it still counts.
        let _ = attr.parse_nested_meta(|meta| {
            let option = meta.path.get_ident().map(|i| i.to_string()).unwrap_or_default();
            match (is_serde, option.as_str()) {
                (true, "with" | "serialize_with" | "deserialize_with" | "getter") => {
                    options.custom = Some(option.clone())
                }
                (true, "from" | "into" | "try_from") => options.converted = Some(option.clone()),
                (false, "with" | "schema_with") => options.described = true,
                (false, shaping) if SCHEMA_SHAPING.contains(&shaping) => options.schema_only = Some(option.clone()),
                (true, "skip") => options.skipped = true,
                (true, "skip_serializing") => skip_serializing = true,
                (true, "skip_deserializing") => skip_deserializing = true,
                _ => {}
            }
            let renames = matches!(option.as_str(), "rename" | "rename_all" | "rename_all_fields");
            if is_serde && renames && meta.input.peek(syn::token::Paren) {
                let (mut written, mut read) = (None, None);
                meta.parse_nested_meta(|side| {
                    let value: syn::LitStr = side.value()?.parse()?;
                    if side.path.is_ident("serialize") {
                        written = Some(value.value());
                    } else if side.path.is_ident("deserialize") {
                        read = Some(value.value());
                    }
                    Ok(())
                })?;
                if written.is_none() || written != read {
                    options.one_sided = Some(format!("{option}(serialize = .., deserialize = ..)"));
                }
            } else if meta.input.peek(syn::token::Paren) {
                // `rename(serialize = "..")` and the like: skip the group, read on.
                let _group: proc_macro2::TokenStream;
                let content;
                syn::parenthesized!(content in meta.input);
                _group = content.parse()?;
            } else if let Ok(value) = meta.value() {
                let _: syn::Expr = value.parse()?;
            }
            Ok(())
        });
    }
    options.skipped |= skip_serializing && skip_deserializing;
    if skip_serializing != skip_deserializing {
        let which = if skip_serializing { "skip_serializing" } else { "skip_deserializing" };
        options.one_sided = Some(which.to_owned());
    }
    options
}

/// Refuses serde's custom (de)serialisers unless a schemars attribute says what they write:
/// otherwise the schema (and digest) would describe a wire form that is not the real one.
fn check_custom_serde(options: &SerdeOptions, at: &dyn quote::ToTokens) -> syn::Result<()> {
    if let Some(option) = &options.schema_only {
        return Err(syn::Error::new_spanned(
            at,
            format!(
                "#[derive(Message)] / #[derive(WireSchema)]: `#[schemars({option})]` changes the schema and not \
                 the wire form, so the schema digest would describe JSON that is never written; write it as \
                 `#[serde({option})]`, which both serde and schemars follow"
            ),
        ));
    }
    if let Some(option) = &options.one_sided {
        return Err(syn::Error::new_spanned(
            at,
            format!(
                "#[derive(Message)] / #[derive(WireSchema)]: `#[serde({option})]` makes what is written differ \
                 from what is read; the schema digest covers only one of the two, so two programs could \
                 advertise the same digest and misread each other. Give the same name both ways \
                 (`#[serde(rename = \"..\")]`), or skip the field both ways (`#[serde(skip)]`)"
            ),
        ));
    }
    if let Some(option) = &options.converted {
        return Err(syn::Error::new_spanned(
            at,
            format!(
                "#[derive(Message)] / #[derive(WireSchema)]: `#[serde({option} = ...)]` puts another type's form \
                 on the wire, which this type's schema does not describe; put that type in the message instead"
            ),
        ));
    }
    match &options.custom {
        Some(option) if !options.described && !options.skipped => Err(syn::Error::new_spanned(
            at,
            format!(
                "#[derive(Message)] / #[derive(WireSchema)]: `#[serde({option} = ...)]` writes a wire form no \
                 schema describes; add `#[schemars(with = \"TypeOfTheWireForm\")]` or \
                 `#[schemars(schema_with = \"path\")]` so the schema digest covers it"
            ),
        )),
        _ => Ok(()),
    }
}

fn type_name_override(input: &DeriveInput) -> syn::Result<Option<String>> {
    let mut name = None;
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("message")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("name") {
                let value: syn::LitStr = meta.value()?.parse()?;
                name = Some(value.value());
                Ok(())
            } else {
                Err(meta.error("unknown #[message] option; expected `name = \"...\"`"))
            }
        })?;
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    //! Each shape the derive refuses, refused with the message that says why (a
    //! `compile_fail` doc-test passes on any error, so the wording is checked here).

    use super::*;

    fn refusal(input: DeriveInput) -> String {
        match expand_message(&input) {
            Ok(_) => panic!("{} was accepted", input.ident),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn a_name_or_skip_that_differs_between_writing_and_reading_is_refused() {
        let cases: [(DeriveInput, &str); 6] = [
            (
                parse_quote! { struct Q { #[serde(rename(serialize = "price"))] cents: u64 } },
                "rename(serialize = .., deserialize = ..)",
            ),
            (
                parse_quote! { struct Q { #[serde(rename(serialize = "a", deserialize = "b"))] cents: u64 } },
                "rename(serialize = .., deserialize = ..)",
            ),
            (
                parse_quote! { #[serde(rename_all(deserialize = "camelCase"))] struct Q { unit_price: u64 } },
                "rename_all(serialize = .., deserialize = ..)",
            ),
            (
                parse_quote! { enum Q { #[serde(rename(serialize = "b"))] A } },
                "rename(serialize = .., deserialize = ..)",
            ),
            (parse_quote! { struct Q { #[serde(skip_serializing)] cents: u64 } }, "skip_serializing"),
            (parse_quote! { struct Q { #[serde(default, skip_deserializing)] cents: u64 } }, "skip_deserializing"),
        ];
        for (input, option) in cases {
            let message = refusal(input);
            assert!(message.contains(&format!("`#[serde({option})]`")), "{message}");
            assert!(message.contains("misread each other"), "{message}");
        }
    }

    #[test]
    fn the_same_name_both_ways_or_a_skip_both_ways_is_accepted() {
        let accepted: [DeriveInput; 4] = [
            parse_quote! { struct Q { #[serde(rename(serialize = "p", deserialize = "p"))] cents: u64 } },
            parse_quote! { #[serde(rename_all = "camelCase")] struct Q { unit_price: u64 } },
            parse_quote! { struct Q { #[serde(skip_serializing, skip_deserializing)] cache: u64, cents: u64 } },
            parse_quote! { struct Q { #[serde(default, skip_serializing_if = "Option::is_none")] cents: Option<u64> } },
        ];
        for input in accepted {
            assert!(expand_message(&input).is_ok(), "{} was refused", input.ident);
        }
    }

    #[test]
    fn every_other_refused_shape_says_why() {
        let cases: [(DeriveInput, &str); 7] = [
            (parse_quote! { struct Q<T> { value: T } }, "does not support generic types"),
            (parse_quote! { union Q { a: u32, b: f32 } }, "do not support unions"),
            (
                parse_quote! { struct Q { #[serde(with = "as_text")] cents: u64 } },
                "`#[serde(with = ...)]` writes a wire form no schema describes",
            ),
            (
                parse_quote! { struct Q { #[serde(getter = "Q::cents")] cents: u64 } },
                "`#[serde(getter = ...)]` writes a wire form",
            ),
            (
                parse_quote! { #[serde(from = "String")] struct Q(u64); },
                "`#[serde(from = ...)]` puts another type's form",
            ),
            (
                parse_quote! { struct Q { #[schemars(rename = "p")] cents: u64 } },
                "`#[schemars(rename)]` changes the schema and not",
            ),
            (
                parse_quote! { struct Q { #[schemars(flatten)] inner: Inner } },
                "`#[schemars(flatten)]` changes the schema",
            ),
        ];
        for (input, expected) in cases {
            let message = refusal(input);
            assert!(message.contains(expected), "expected {expected:?} in {message:?}");
        }
    }
}
