//! `forward_object_store!`: the methods of a wrapper store that only hand
//! the call on to the store it wraps.
//!
//! Test and bench wrappers around an `object_store::ObjectStore` change one
//! to three calls and pass all the others on unchanged. Placed inside the
//! `#[async_trait] impl ObjectStore for Wrapper` block, next to the methods
//! written by hand,
//!
//! ```ignore
//! forward_object_store!(inner; put_opts, put_multipart_opts, delete_stream, list);
//! ```
//!
//! writes each named method as `self.inner.<method>(..)`. Every method the
//! trait requires can be named, and the two with a default that wrappers
//! here override, `get_ranges` and `list_with_offset`: named, they reach
//! the inner store's own version rather than the default.
//!
//! `#[async_trait]` rewrites only the `async fn`s written in the block
//! itself, not what a macro in it expands to, so the async methods are
//! written here in the form it gives them: a boxed `Send` future that
//! borrows its arguments.
//!
//! Include it with `#[path = "<relative path>/forward.rs"] #[macro_use] mod
//! forward;` (the path is relative to the including file's directory). A
//! test binary loads it once: one whose `common` module includes it takes
//! the macro from there with `#[macro_use] mod common;`. The names are
//! resolved where the macro is used, so `object_store`, `futures` and (for
//! `get_ranges`) `bytes` must be in scope there under these names.

macro_rules! forward_object_store {
    ($field:ident; $($method:ident),+ $(,)?) => {
        $(forward_object_store!(@method $field $method);)+
    };

    (@method $field:ident put_opts) => {
        forward_object_store!(@async $field put_opts ('life1) (
            location: &'life1 object_store::path::Path,
            payload: object_store::PutPayload,
            opts: object_store::PutOptions,
        ) -> object_store::PutResult);
    };
    (@method $field:ident put_multipart_opts) => {
        forward_object_store!(@async $field put_multipart_opts ('life1) (
            location: &'life1 object_store::path::Path,
            opts: object_store::PutMultipartOptions,
        ) -> Box<dyn object_store::MultipartUpload>);
    };
    (@method $field:ident get_opts) => {
        forward_object_store!(@async $field get_opts ('life1) (
            location: &'life1 object_store::path::Path,
            options: object_store::GetOptions,
        ) -> object_store::GetResult);
    };
    (@method $field:ident get_ranges) => {
        forward_object_store!(@async $field get_ranges ('life1, 'life2) (
            location: &'life1 object_store::path::Path,
            ranges: &'life2 [::std::ops::Range<u64>],
        ) -> Vec<bytes::Bytes>);
    };
    (@method $field:ident list_with_delimiter) => {
        forward_object_store!(@async $field list_with_delimiter ('life1) (
            prefix: Option<&'life1 object_store::path::Path>,
        ) -> object_store::ListResult);
    };
    (@method $field:ident copy_opts) => {
        forward_object_store!(@async $field copy_opts ('life1, 'life2) (
            from: &'life1 object_store::path::Path,
            to: &'life2 object_store::path::Path,
            options: object_store::CopyOptions,
        ) -> ());
    };

    (@method $field:ident delete_stream) => {
        fn delete_stream(
            &self,
            locations: futures::stream::BoxStream<
                'static,
                object_store::Result<object_store::path::Path>,
            >,
        ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>>
        {
            self.$field.delete_stream(locations)
        }
    };
    (@method $field:ident list) => {
        fn list(
            &self,
            prefix: Option<&object_store::path::Path>,
        ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
            self.$field.list(prefix)
        }
    };
    (@method $field:ident list_with_offset) => {
        fn list_with_offset(
            &self,
            prefix: Option<&object_store::path::Path>,
            offset: &object_store::path::Path,
        ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
            self.$field.list_with_offset(prefix, offset)
        }
    };

    // An async method as `#[async_trait]` writes it: `self` borrowed for
    // 'life0, each borrowed argument for its own lifetime, all outliving
    // the returned future.
    (@async $field:ident $name:ident ($($lt:lifetime),*) (
        $($arg:ident: $ty:ty),* $(,)?
    ) -> $out:ty) => {
        fn $name<'life0, $($lt,)* 'async_trait>(
            &'life0 self,
            $($arg: $ty),*
        ) -> ::std::pin::Pin<
            Box<
                dyn ::std::future::Future<Output = object_store::Result<$out>>
                    + ::std::marker::Send
                    + 'async_trait,
            >,
        >
        where
            'life0: 'async_trait,
            $($lt: 'async_trait,)*
            Self: 'async_trait,
        {
            Box::pin(async move { self.$field.$name($($arg),*).await })
        }
    };
}
