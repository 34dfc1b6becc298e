//! `#[nncore::forward]`: a PyTorch-style `forward` written in Rust, rewritten
//! into calls on nncore's engine, once for inference and once for training.
//!
//! The rewrite knows which local names hold tensors (the input, and every
//! `let` bound to a tensor expression), turns each tensor operation into a
//! call on the engine (`__cx`), and leaves plain Rust (sizes, scalars,
//! configuration fields) as it is. Anything on tensors outside the
//! vocabulary is a compile error spanned at the expression.

use std::collections::HashMap;

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;

use crate::ctxt::Ctxt;

const VOCABULARY: &str = "a written forward may use: child modules (`self.fc(x)`, `self.blocks[i](x)`, \
`block(x)` in `for block in &self.blocks`, `norm(x)` in `if let Some(norm) = &self.norm`); \
`+ - * /` between tensors (element-wise, broadcasting) and with scalars; relu, leaky_relu, sigmoid, \
tanh, gelu, exp, log, sqrt, softmax, log_softmax, cat, narrow, chunk (as functions or methods); \
shape, nrows, ncols; `let`, `?`, and `if` / `for` / `match` on plain values";

const TENSOR_METHODS: &str = "relu, leaky_relu, sigmoid, tanh, gelu, exp, log, sqrt, softmax, \
log_softmax, narrow, chunk, clone, shape, nrows, ncols";

/// What an expression of the forward is.
#[derive(Clone)]
enum Kind {
    /// A tensor (a `Var` in the rewritten code).
    Tensor,
    /// An array or `Vec` of tensors (`chunk`, `[a, b]` for `cat`).
    Tensors,
    /// A tuple, element by element.
    Tuple(Vec<Kind>),
    /// A child module bound to a local name.
    Module(ModVar),
    /// Plain Rust: left as written.
    Other,
}

/// A local name bound to a child module: the loop variable over a module
/// list, or the `Some` of an optional child.
#[derive(Clone)]
struct ModVar {
    field: String,
    /// For a list element: the local holding its index.
    index: Option<syn::Ident>,
}

/// The kind of child call site, for `Written::child_mut`.
enum Access {
    Field(syn::Member),
    Element(syn::Member),
    Optional(syn::Member),
}

struct Lower<'a> {
    train: bool,
    cx: &'a mut Ctxt,
    scopes: Vec<HashMap<String, Kind>>,
    sites: Vec<Access>,
    /// Inference only: each child call lowered so far (its tokens, as
    /// text), with the same call taking a ReLU into its output, for
    /// `relu(self.fc(x))`.
    relu_fused: HashMap<String, TokenStream>,
}

fn member_name(m: &syn::Member) -> String {
    match m {
        syn::Member::Named(i) => i.unraw().to_string(),
        syn::Member::Unnamed(i) => i.index.to_string(),
    }
}

fn is_self(e: &syn::Expr) -> bool {
    matches!(e, syn::Expr::Path(p) if p.path.is_ident("self"))
}

/// `self.<field>` (through references and parentheses).
fn self_field(e: &syn::Expr) -> Option<&syn::Member> {
    match e {
        syn::Expr::Field(f) if is_self(&f.base) => Some(&f.member),
        syn::Expr::Paren(p) => self_field(&p.expr),
        syn::Expr::Reference(r) => self_field(&r.expr),
        _ => None,
    }
}

fn single_ident(e: &syn::Expr) -> Option<&syn::Ident> {
    match e {
        syn::Expr::Path(p) if p.qself.is_none() => p.path.get_ident(),
        _ => None,
    }
}

impl Lower<'_> {
    fn lookup(&self, name: &str) -> Option<&Kind> {
        self.scopes.iter().rev().find_map(|s| s.get(name))
    }

    fn bind(&mut self, ident: &syn::Ident, kind: Kind) {
        self.scopes
            .last_mut()
            .expect("a scope")
            .insert(ident.unraw().to_string(), kind);
    }

    /// Sets the kind of an existing binding (an assignment of a tensor to
    /// a name declared without a value).
    fn rebind(&mut self, ident: &syn::Ident, kind: Kind) {
        let name = ident.unraw().to_string();
        for s in self.scopes.iter_mut().rev() {
            if let Some(k) = s.get_mut(&name) {
                *k = kind;
                return;
            }
        }
    }

    fn error<T: ToTokens>(
        &mut self,
        tokens: T,
        msg: impl std::fmt::Display,
    ) -> (TokenStream, Kind) {
        self.cx.error_spanned_by(tokens, msg);
        (quote!(::nncore::Var::INPUT), Kind::Other)
    }

    /// Whether `tokens` name a tensor in scope.
    fn mentions_tensor(&self, tokens: TokenStream) -> bool {
        tokens.into_iter().any(|tt| match tt {
            TokenTree::Ident(i) => matches!(
                self.lookup(&i.unraw().to_string()),
                Some(Kind::Tensor | Kind::Tensors)
            ),
            TokenTree::Group(g) => self.mentions_tensor(g.stream()),
            _ => false,
        })
    }

    fn new_site(&mut self, access: Access) -> u32 {
        self.sites.push(access);
        (self.sites.len() - 1) as u32
    }

    fn block(&mut self, b: &syn::Block) -> (TokenStream, Kind) {
        self.scopes.push(HashMap::new());
        let mut out = TokenStream::new();
        let mut kind = Kind::Other;
        let n = b.stmts.len();
        for (i, s) in b.stmts.iter().enumerate() {
            let (ts, k) = self.stmt(s);
            if i + 1 == n {
                kind = k;
            }
            out.extend(ts);
        }
        self.scopes.pop();
        (quote_spanned!(b.brace_token.span.join()=> { #out }), kind)
    }

    fn stmt(&mut self, s: &syn::Stmt) -> (TokenStream, Kind) {
        match s {
            syn::Stmt::Local(local) => (self.local(local), Kind::Other),
            syn::Stmt::Item(item) => (item.to_token_stream(), Kind::Other),
            syn::Stmt::Expr(e, semi) => {
                let (ts, k) = self.expr(e);
                match semi {
                    Some(semi) => (quote!(#ts #semi), Kind::Other),
                    None => (ts, k),
                }
            }
            syn::Stmt::Macro(m) => {
                if self.mentions_tensor(m.mac.tokens.clone()) {
                    self.error(
                        &m.mac,
                        "a macro cannot take tensors inside a written forward (the engine cannot follow them); use the tensors in plain expressions",
                    );
                }
                (m.to_token_stream(), Kind::Other)
            }
        }
    }

    fn local(&mut self, local: &syn::Local) -> TokenStream {
        let (init, kind) = match &local.init {
            Some(init) => {
                if let Some((_, diverge)) = &init.diverge {
                    self.error(
                        diverge,
                        "`let ... else` is not supported in a written forward",
                    );
                }
                let (ts, k) = self.expr(&init.expr);
                (Some(ts), k)
            }
            None => (None, Kind::Other),
        };
        let pat = self.bind_pat(&local.pat, kind);
        match init {
            Some(init) => quote!(let #pat = #init;),
            None => quote!(let #pat;),
        }
    }

    /// Binds the names of `pat` to `kind`, and returns the pattern to emit
    /// (a type annotation on a tensor is dropped: tensors are `Var`s).
    fn bind_pat(&mut self, pat: &syn::Pat, kind: Kind) -> TokenStream {
        match (pat, &kind) {
            (syn::Pat::Ident(pi), _) => {
                self.bind(&pi.ident, kind);
                pat.to_token_stream()
            }
            (syn::Pat::Type(pt), Kind::Tensor | Kind::Tensors) => self.bind_pat(&pt.pat, kind),
            (syn::Pat::Type(pt), _) => {
                self.bind_pat(&pt.pat, kind);
                pat.to_token_stream()
            }
            (syn::Pat::Slice(ps), Kind::Tensors) => {
                for p in &ps.elems {
                    self.bind_pat(p, Kind::Tensor);
                }
                pat.to_token_stream()
            }
            (syn::Pat::Tuple(pt), Kind::Tuple(kinds)) if kinds.len() == pt.elems.len() => {
                for (p, k) in pt.elems.iter().zip(kinds.clone()) {
                    self.bind_pat(p, k);
                }
                pat.to_token_stream()
            }
            (_, Kind::Tensor | Kind::Tensors | Kind::Tuple(_) | Kind::Module(_)) => {
                self.error(
                    pat,
                    "bind tensors to plain names (`let h = ...`), an array pattern for `chunk` (`let [a, b] = x.chunk(2, 1)`), or a tuple pattern for a tuple",
                );
                pat.to_token_stream()
            }
            (_, Kind::Other) => {
                self.bind_all(pat);
                pat.to_token_stream()
            }
        }
    }

    /// Binds every name in a pattern as plain Rust.
    fn bind_all(&mut self, pat: &syn::Pat) {
        fn walk(tokens: TokenStream, out: &mut Vec<syn::Ident>) {
            for tt in tokens {
                match tt {
                    TokenTree::Ident(i) => out.push(i),
                    TokenTree::Group(g) => walk(g.stream(), out),
                    _ => {}
                }
            }
        }
        let mut idents = Vec::new();
        walk(pat.to_token_stream(), &mut idents);
        for i in idents {
            self.bind(&i, Kind::Other);
        }
    }

    fn expr(&mut self, e: &syn::Expr) -> (TokenStream, Kind) {
        use syn::Expr;
        match e {
            Expr::Path(p) => {
                let kind = single_ident(e)
                    .and_then(|i| self.lookup(&i.unraw().to_string()).cloned())
                    .unwrap_or(Kind::Other);
                (p.to_token_stream(), kind)
            }
            Expr::Lit(_) => (e.to_token_stream(), Kind::Other),
            Expr::Reference(r) => {
                let (ts, kind) = self.expr(&r.expr);
                match kind {
                    Kind::Tensor | Kind::Tensors => (ts, kind),
                    _ => {
                        let and = r.and_token;
                        let m = r.mutability;
                        (quote!(#and #m #ts), kind)
                    }
                }
            }
            Expr::Paren(p) => {
                let (ts, kind) = self.expr(&p.expr);
                match kind {
                    // Already a block: parentheses would only warn.
                    Kind::Tensor => (ts, kind),
                    _ => (quote_spanned!(p.paren_token.span.join()=> (#ts)), kind),
                }
            }
            Expr::Group(g) => self.expr(&g.expr),
            Expr::Binary(b) => self.binary(b),
            Expr::Unary(u) => self.unary(u),
            Expr::Call(c) => self.call(c),
            Expr::MethodCall(m) => self.method_call(m),
            Expr::Index(ix) => {
                let (base, bk) = self.expr(&ix.expr);
                let (index, ik) = self.expr(&ix.index);
                if matches!(ik, Kind::Tensor | Kind::Tensors) {
                    return self.error(&ix.index, "a tensor cannot be used as an index");
                }
                match bk {
                    Kind::Tensors => (quote!(#base[#index]), Kind::Tensor),
                    Kind::Tensor => self.error(
                        e,
                        "indexing a tensor is not supported in a written forward; take features with `narrow` or `chunk`",
                    ),
                    _ => (quote!(#base[#index]), Kind::Other),
                }
            }
            Expr::Field(f) => {
                let (base, bk) = self.expr(&f.base);
                if matches!(bk, Kind::Tensor | Kind::Tensors) {
                    return self.error(e, "a tensor has no fields");
                }
                let member = &f.member;
                let dot = f.dot_token;
                (quote!(#base #dot #member), Kind::Other)
            }
            Expr::Try(t) => {
                let (ts, kind) = self.expr(&t.expr);
                let q = t.question_token;
                match kind {
                    Kind::Tensor => {
                        let checked = quote!({ let __v = #ts; __cx.check(__v) #q });
                        // `relu(self.fc(x)?)` fuses as `relu(self.fc(x))`.
                        if let Some(fused) = self.relu_fused.get(&ts.to_string()) {
                            let fused = quote!({ let __v = #fused; __cx.check(__v) #q });
                            self.relu_fused.insert(checked.to_string(), fused);
                        }
                        (checked, Kind::Tensor)
                    }
                    Kind::Tensors => (
                        quote!({ let __v = #ts; __cx.check(::nncore::Var::INPUT) #q; __v }),
                        Kind::Tensors,
                    ),
                    _ => (quote!(#ts #q), Kind::Other),
                }
            }
            Expr::Block(b) => {
                let (ts, kind) = self.block(&b.block);
                let label = &b.label;
                (quote!(#label #ts), kind)
            }
            Expr::If(i) => self.if_expr(i),
            Expr::ForLoop(f) => self.for_loop(f),
            Expr::While(w) => {
                let (cond, ck) = self.expr(&w.cond);
                if !matches!(ck, Kind::Other) || self.mentions_tensor(w.cond.to_token_stream()) {
                    return self.error(&w.cond, TENSOR_CONDITION);
                }
                let (body, _) = self.block(&w.body);
                let label = &w.label;
                (quote!(#label while #cond #body), Kind::Other)
            }
            Expr::Loop(l) => {
                let (body, _) = self.block(&l.body);
                let label = &l.label;
                (quote!(#label loop #body), Kind::Other)
            }
            Expr::Match(m) => self.match_expr(m),
            Expr::Return(r) => match &r.expr {
                Some(v) => {
                    let (ts, k) = self.expr(v);
                    match k {
                        Kind::Tensor => (quote!(return ::core::result::Result::Ok(#ts)), Kind::Other),
                        _ => (quote!(return #ts), Kind::Other),
                    }
                }
                None => (e.to_token_stream(), Kind::Other),
            },
            Expr::Assign(a) => {
                let (right, rk) = self.expr(&a.right);
                if let Some(ident) = single_ident(&a.left) {
                    if matches!(rk, Kind::Tensor | Kind::Tensors) {
                        self.rebind(ident, rk);
                    }
                    let left = &a.left;
                    return (quote!(#left = #right), Kind::Other);
                }
                let (left, lk) = self.expr(&a.left);
                if !matches!(lk, Kind::Other) || !matches!(rk, Kind::Other) {
                    return self.error(e, "assign tensors to local names only");
                }
                (quote!(#left = #right), Kind::Other)
            }
            Expr::Array(a) => {
                let lowered: Vec<(TokenStream, Kind)> = a.elems.iter().map(|x| self.expr(x)).collect();
                let tensors = lowered.iter().filter(|(_, k)| matches!(k, Kind::Tensor)).count();
                let elems = lowered.iter().map(|(ts, _)| ts);
                if tensors == 0 {
                    (quote!([#(#elems),*]), Kind::Other)
                } else if tensors == lowered.len() {
                    (quote!([#(#elems),*]), Kind::Tensors)
                } else {
                    self.error(e, "an array must hold only tensors or no tensors")
                }
            }
            Expr::Tuple(t) => {
                let lowered: Vec<(TokenStream, Kind)> = t.elems.iter().map(|x| self.expr(x)).collect();
                let elems = lowered.iter().map(|(ts, _)| ts);
                let kinds = lowered.iter().map(|(_, k)| k.clone()).collect();
                let trailing = (lowered.len() == 1).then(|| quote!(,));
                (quote!((#(#elems),* #trailing)), Kind::Tuple(kinds))
            }
            Expr::Cast(c) => {
                let (ts, kind) = self.expr(&c.expr);
                if !matches!(kind, Kind::Other) {
                    return self.error(e, "a tensor cannot be cast with `as`");
                }
                let ty = &c.ty;
                (quote!(#ts as #ty), Kind::Other)
            }
            Expr::Closure(_) if self.mentions_tensor(e.to_token_stream()) => self.error(
                e,
                "tensors cannot be used inside a closure in a written forward; write the computation inline",
            ),
            Expr::Macro(m) if self.mentions_tensor(m.mac.tokens.clone()) => self.error(
                &m.mac,
                "a macro cannot take tensors inside a written forward (the engine cannot follow them); use the tensors in plain expressions",
            ),
            _ if self.mentions_tensor(e.to_token_stream()) => {
                self.error(e, format!("this expression is not supported on tensors; {VOCABULARY}"))
            }
            _ => (e.to_token_stream(), Kind::Other),
        }
    }

    fn binary(&mut self, b: &syn::ExprBinary) -> (TokenStream, Kind) {
        use syn::BinOp;
        let (l, lk) = self.expr(&b.left);
        let (r, rk) = self.expr(&b.right);
        let op = &b.op;
        let lt = matches!(lk, Kind::Tensor);
        let rt = matches!(rk, Kind::Tensor);
        for (k, side) in [(&lk, &b.left), (&rk, &b.right)] {
            let plain_tuple =
                matches!(k, Kind::Tuple(v) if v.iter().all(|k| matches!(k, Kind::Other)));
            if matches!(k, Kind::Tensors | Kind::Module(_) | Kind::Tuple(_)) && !plain_tuple {
                return self.error(side, "arithmetic takes single tensors or scalars");
            }
        }
        if !lt && !rt {
            return (quote!(#l #op #r), Kind::Other);
        }
        let (name, assign) = match op {
            BinOp::Add(_) => ("Add", false),
            BinOp::Sub(_) => ("Sub", false),
            BinOp::Mul(_) => ("Mul", false),
            BinOp::Div(_) => ("Div", false),
            BinOp::AddAssign(_) => ("Add", true),
            BinOp::SubAssign(_) => ("Sub", true),
            BinOp::MulAssign(_) => ("Mul", true),
            BinOp::DivAssign(_) => ("Div", true),
            BinOp::Eq(_)
            | BinOp::Ne(_)
            | BinOp::Lt(_)
            | BinOp::Le(_)
            | BinOp::Gt(_)
            | BinOp::Ge(_) => {
                return self.error(b, TENSOR_CONDITION);
            }
            _ => {
                return self.error(
                    op,
                    format!(
                        "`{}` is not supported on tensors; tensors take `+ - * /` (element-wise)",
                        op.to_token_stream()
                    ),
                );
            }
        };
        let span = op.span();
        let value = if lt && rt {
            let op = format_ident!("{}", name, span = span);
            quote_spanned! {span=>
                { let __a = #l; let __b = #r; __cx.binary(::nncore::__private_v1::Binary::#op, __a, __b) }
            }
        } else {
            // A tensor and a scalar, in either order.
            let (t, s, name) = if lt {
                (l.clone(), r, name)
            } else {
                let name = match name {
                    "Sub" => "RSub",
                    "Div" => "RDiv",
                    n => n,
                };
                (r, l.clone(), name)
            };
            let op = format_ident!("{}", name, span = span);
            quote_spanned! {span=>
                { let __a = #t; let __s = (#s) as f32; __cx.scalar(::nncore::__private_v1::ScalarOp::#op, __a, __s) }
            }
        };
        if assign {
            if !lt || single_ident(&b.left).is_none() {
                return self.error(
                    b,
                    "`+=`, `-=`, `*=` and `/=` on tensors need a local tensor name on the left",
                );
            }
            (quote!(#l = #value), Kind::Other)
        } else {
            (value, Kind::Tensor)
        }
    }

    fn unary(&mut self, u: &syn::ExprUnary) -> (TokenStream, Kind) {
        let (ts, kind) = self.expr(&u.expr);
        let op = &u.op;
        match (op, &kind) {
            (_, Kind::Other) => (quote!(#op #ts), Kind::Other),
            (syn::UnOp::Neg(_), Kind::Tensor) => (
                quote_spanned! {op.span()=>
                    { let __a = #ts; __cx.scalar(::nncore::__private_v1::ScalarOp::Mul, __a, -1.0) }
                },
                Kind::Tensor,
            ),
            (syn::UnOp::Deref(_), Kind::Tensor) => (ts, kind),
            _ => self.error(u, "only `-` applies to a tensor"),
        }
    }

    /// A call of child module `m` (its eval and train forms) on `args`.
    fn child_call(
        &mut self,
        whole: &dyn ToTokens,
        access: Access,
        index: Option<TokenStream>,
        module: TokenStream,
        module_mut: TokenStream,
        args: &syn::punctuated::Punctuated<syn::Expr, syn::Token![,]>,
    ) -> (TokenStream, Kind) {
        if args.len() != 1 {
            return self.error(whole, "a module takes one tensor: `self.fc(x)`");
        }
        let (arg, kind) = self.expr(&args[0]);
        if !matches!(kind, Kind::Tensor) {
            return self.error(&args[0], "a module takes one tensor");
        }
        let field = match &access {
            Access::Field(m) | Access::Element(m) | Access::Optional(m) => member_name(m),
        };
        let list = matches!(access, Access::Element(_));
        let id = self.new_site(access);
        let site = match index {
            Some(i) if list => quote!(::nncore::__private_v1::Site::element(#id, #field, #i)),
            _ => quote!(::nncore::__private_v1::Site::field(#id, #field)),
        };
        let span = whole.to_token_stream().span();
        // The module expression takes the call's place, so that a child
        // that cannot be trained is reported at its call in the forward.
        let m = relocate(if self.train { module_mut } else { module }, span);
        let call = quote_spanned! {span=>
            { let __a = #arg; __cx.call(#m, #site, __a) }
        };
        if !self.train {
            let fused = quote_spanned! {span=>
                { let __a = #arg; __cx.call_relu(#m, #site, __a) }
            };
            self.relu_fused.insert(call.to_string(), fused);
        }
        (call, Kind::Tensor)
    }

    /// `self.<list>[i](x)`.
    fn element_call(
        &mut self,
        whole: &dyn ToTokens,
        member: &syn::Member,
        index: &syn::Expr,
        args: &syn::punctuated::Punctuated<syn::Expr, syn::Token![,]>,
    ) -> (TokenStream, Kind) {
        let (index, ik) = self.expr(index);
        if !matches!(ik, Kind::Other) {
            return self.error(whole, "a module list is indexed by a number");
        }
        if args.len() != 1 {
            return self.error(whole, "a module takes one tensor: `self.blocks[i](x)`");
        }
        let (arg, kind) = self.expr(&args[0]);
        if !matches!(kind, Kind::Tensor) {
            return self.error(&args[0], "a module takes one tensor");
        }
        let field = member_name(member);
        let id = self.new_site(Access::Element(member.clone()));
        let get = if self.train {
            quote!(get_mut)
        } else {
            quote!(get)
        };
        (
            quote_spanned! {whole.to_token_stream().span()=>
                {
                    let __i: usize = #index;
                    let __a = #arg;
                    let __site = ::nncore::__private_v1::Site::element(#id, #field, __i);
                    match self.#member.#get(__i) {
                        ::core::option::Option::Some(__m) => __cx.call(__m, __site, __a),
                        ::core::option::Option::None => __cx.out_of_range(__site, self.#member.len()),
                    }
                }
            },
            Kind::Tensor,
        )
    }

    fn call(&mut self, c: &syn::ExprCall) -> (TokenStream, Kind) {
        let func = match &*c.func {
            syn::Expr::Paren(p) => &*p.expr,
            f => f,
        };
        // (self.fc)(x), self.0(x)
        if let syn::Expr::Field(f) = func
            && is_self(&f.base)
        {
            let member = &f.member;
            return self.child_call(
                c,
                Access::Field(member.clone()),
                None,
                quote!(&self.#member),
                quote!(&mut self.#member),
                &c.args,
            );
        }
        // self.blocks[i](x)
        if let syn::Expr::Index(ix) = func
            && let Some(member) = self_field(&ix.expr)
        {
            return self.element_call(c, member, &ix.index, &c.args);
        }
        if let Some(ident) = single_ident(func)
            && let Some(Kind::Module(mv)) = self.lookup(&ident.unraw().to_string()).cloned()
        {
            return self.module_var_call(c, ident, &mv, &c.args);
        }
        let syn::Expr::Path(path) = func else {
            let (f, _) = self.expr(func);
            return self.plain_call(c, f);
        };
        let last = path
            .path
            .segments
            .last()
            .map(|s| s.ident.to_string())
            .unwrap_or_default();
        let args: Vec<(TokenStream, Kind)> = c.args.iter().map(|a| self.expr(a)).collect();
        let any_tensor = args
            .iter()
            .any(|(_, k)| matches!(k, Kind::Tensor | Kind::Tensors));
        if !any_tensor {
            return Self::plain_call_lowered(path.to_token_stream(), &args);
        }
        if matches!(last.as_str(), "Ok" | "Some" | "Err" | "Box" | "identity") {
            return Self::plain_call_lowered(path.to_token_stream(), &args);
        }
        self.function(c, &last, &args, &c.args)
    }

    fn module_var_call(
        &mut self,
        whole: &dyn ToTokens,
        ident: &syn::Ident,
        mv: &ModVar,
        args: &syn::punctuated::Punctuated<syn::Expr, syn::Token![,]>,
    ) -> (TokenStream, Kind) {
        let member: syn::Member = syn::parse_str(&mv.field)
            .unwrap_or_else(|_| syn::Member::Named(syn::Ident::new(&mv.field, Span::call_site())));
        let access = if mv.index.is_some() {
            Access::Element(member)
        } else {
            Access::Optional(member)
        };
        let index = mv.index.as_ref().map(|i| quote!(#i));
        self.child_call(
            whole,
            access,
            index,
            quote!(&*#ident),
            quote!(&mut *#ident),
            args,
        )
    }

    fn plain_call(&mut self, c: &syn::ExprCall, func: TokenStream) -> (TokenStream, Kind) {
        let args: Vec<(TokenStream, Kind)> = c.args.iter().map(|a| self.expr(a)).collect();
        if args.iter().any(|(_, k)| !matches!(k, Kind::Other)) {
            return self.error(c, format!("this call cannot take tensors; {VOCABULARY}"));
        }
        Self::plain_call_lowered(func, &args)
    }

    /// A call of plain Rust (or `Ok(..)` around a tensor), arguments
    /// already lowered.
    fn plain_call_lowered(func: TokenStream, args: &[(TokenStream, Kind)]) -> (TokenStream, Kind) {
        let args = args.iter().map(|(ts, _)| ts);
        (quote!(#func(#(#args),*)), Kind::Other)
    }

    /// A function of the vocabulary: `relu(x)`, `cat(&[a, b], 1)`, ...
    fn function(
        &mut self,
        whole: &dyn ToTokens,
        name: &str,
        args: &[(TokenStream, Kind)],
        raw: &syn::punctuated::Punctuated<syn::Expr, syn::Token![,]>,
    ) -> (TokenStream, Kind) {
        let raw: Vec<&syn::Expr> = raw.iter().collect();
        self.tensor_op(whole, name, args, &raw, true)
    }

    /// An operation of the vocabulary on `args[0]` (a method's receiver
    /// first), with its other arguments.
    fn tensor_op(
        &mut self,
        whole: &dyn ToTokens,
        name: &str,
        args: &[(TokenStream, Kind)],
        raw: &[&syn::Expr],
        function: bool,
    ) -> (TokenStream, Kind) {
        let span = whole.to_token_stream().span();
        let arity = |n: usize| args.len() == n;
        let first_tensor = matches!(args.first(), Some((_, Kind::Tensor)));
        let rest_plain = args.iter().skip(1).all(|(_, k)| matches!(k, Kind::Other));
        let x = args.first().map(|(ts, _)| ts.clone()).unwrap_or_default();
        let arg = |i: usize| args.get(i).map(|(ts, _)| ts.clone()).unwrap_or_default();
        let unary = |k: TokenStream| {
            quote_spanned! {span=>
                { let __a = #x; __cx.unary(::nncore::__private_v1::Unary::#k, __a) }
            }
        };
        let usage = |sig: &str| {
            if function {
                format!("expected `{name}({sig})`")
            } else {
                let mut parts = sig.splitn(2, ", ");
                let _ = parts.next();
                format!("expected `x.{name}({})`", parts.next().unwrap_or(""))
            }
        };
        let out = match name {
            "relu" | "sigmoid" | "tanh" | "exp" | "log" | "sqrt" => {
                if !(arity(1) && first_tensor) {
                    return self.error(whole, usage("x"));
                }
                // `relu(self.fc(x))`: the child's output feeds only the
                // ReLU, which the child can then apply on its way out.
                if name == "relu"
                    && let Some(fused) = self.relu_fused.get(&x.to_string())
                {
                    return (fused.clone(), Kind::Tensor);
                }
                let k = match name {
                    "relu" => quote!(Relu),
                    "sigmoid" => quote!(Sigmoid),
                    "tanh" => quote!(Tanh),
                    "exp" => quote!(Exp),
                    "log" => quote!(Log),
                    _ => quote!(Sqrt),
                };
                unary(k)
            }
            "leaky_relu" => {
                if !(arity(2) && first_tensor && rest_plain) {
                    return self.error(whole, usage("x, negative_slope"));
                }
                let s = arg(1);
                quote_spanned! {span=>
                    { let __a = #x; let __s = (#s) as f32; __cx.unary(::nncore::__private_v1::Unary::LeakyRelu(__s), __a) }
                }
            }
            "gelu" => {
                let approx = match raw.get(1) {
                    None => quote!(None),
                    Some(syn::Expr::Lit(syn::ExprLit {
                        lit: syn::Lit::Str(s),
                        ..
                    })) if s.value() == "none" => quote!(None),
                    Some(syn::Expr::Lit(syn::ExprLit {
                        lit: syn::Lit::Str(s),
                        ..
                    })) if s.value() == "tanh" => quote!(Tanh),
                    Some(_) => return self.error(whole, usage("x, \"tanh\"")),
                };
                if !(first_tensor && args.len() <= 2) {
                    return self.error(whole, usage("x"));
                }
                unary(quote!(Gelu(::nncore::GeluApproximate::#approx)))
            }
            "softmax" | "log_softmax" => {
                if !(arity(2) && first_tensor && rest_plain) {
                    return self.error(whole, usage("x, dim"));
                }
                let dim = arg(1);
                let log = name == "log_softmax";
                quote_spanned! {span=>
                    { let __a = #x; let __d = (#dim) as i64; __cx.softmax(__a, __d, #log) }
                }
            }
            "narrow" => {
                if !(arity(4) && first_tensor && rest_plain) {
                    return self.error(whole, usage("x, dim, start, length"));
                }
                let (d, s, l) = (arg(1), arg(2), arg(3));
                quote_spanned! {span=>
                    {
                        let __a = #x;
                        let (__d, __s, __l) = ((#d) as i64, (#s) as i64, (#l) as i64);
                        __cx.narrow(__a, __d, __s, __l)
                    }
                }
            }
            "chunk" => {
                if !(arity(3) && first_tensor && rest_plain) {
                    return self.error(whole, usage("x, chunks, dim"));
                }
                let (n, d) = (arg(1), arg(2));
                let literal = match raw.get(1) {
                    Some(syn::Expr::Lit(syn::ExprLit {
                        lit: syn::Lit::Int(i),
                        ..
                    })) => i.base10_parse::<usize>().ok(),
                    _ => None,
                };
                return match literal {
                    Some(count) => (
                        quote_spanned! {span=>
                            { let __a = #x; let __d = (#d) as i64; __cx.chunk::<#count>(__a, #count as i64, __d) }
                        },
                        Kind::Tensors,
                    ),
                    None => (
                        quote_spanned! {span=>
                            { let __a = #x; let (__n, __d) = ((#n) as i64, (#d) as i64); __cx.chunk_vec(__a, __n, __d) }
                        },
                        Kind::Tensors,
                    ),
                };
            }
            "cat" => {
                if !(arity(2) && matches!(args[0].1, Kind::Tensors) && rest_plain) {
                    return self.error(
                        whole,
                        "expected `cat(&[a, b], dim)` with tensors `a`, `b`, ...",
                    );
                }
                let (xs, d) = (arg(0), arg(1));
                quote_spanned! {span=>
                    { let __xs = #xs; let __d = (#d) as i64; __cx.cat(&__xs, __d) }
                }
            }
            "shape" | "nrows" | "ncols" if !function => {
                if !(arity(1) && first_tensor) {
                    return self.error(whole, format!("expected `x.{name}()`"));
                }
                let m = format_ident!("{}", name);
                return (quote_spanned!(span=> __cx.#m(#x)), Kind::Other);
            }
            "clone" if !function => return (x, Kind::Tensor),
            _ => {
                let msg = if function {
                    format!(
                        "`{name}` is not a function a written forward can differentiate; {VOCABULARY}"
                    )
                } else {
                    format!(
                        "`{name}` is not a tensor method a written forward can differentiate; tensor methods: {TENSOR_METHODS}"
                    )
                };
                return self.error(whole, msg);
            }
        };
        (out, Kind::Tensor)
    }

    fn method_call(&mut self, m: &syn::ExprMethodCall) -> (TokenStream, Kind) {
        let method = m.method.unraw().to_string();
        // self.fc(x)
        if is_self(&m.receiver) {
            if m.turbofish.is_some() {
                return self.error(m, "a child module is called as `self.fc(x)`");
            }
            let member = syn::Member::Named(m.method.clone());
            return self.child_call(
                m,
                Access::Field(member.clone()),
                None,
                quote!(&self.#member),
                quote!(&mut self.#member),
                &m.args,
            );
        }
        if method == "forward" {
            // self.fc.forward(x), self.blocks[i].forward(x), block.forward(x)
            if let Some(member) = self_field(&m.receiver) {
                return self.child_call(
                    m,
                    Access::Field(member.clone()),
                    None,
                    quote!(&self.#member),
                    quote!(&mut self.#member),
                    &m.args,
                );
            }
            if let syn::Expr::Index(ix) = &*m.receiver
                && let Some(member) = self_field(&ix.expr)
            {
                return self.element_call(m, member, &ix.index, &m.args);
            }
            if let Some(ident) = single_ident(&m.receiver)
                && let Some(Kind::Module(mv)) = self.lookup(&ident.unraw().to_string()).cloned()
            {
                return self.module_var_call(m, ident, &mv, &m.args);
            }
        }
        let (recv, rk) = self.expr(&m.receiver);
        let mut args: Vec<(TokenStream, Kind)> = vec![(recv.clone(), rk.clone())];
        args.extend(m.args.iter().map(|a| self.expr(a)));
        match rk {
            Kind::Tensor => {
                let mut raw: Vec<&syn::Expr> = vec![&m.receiver];
                raw.extend(m.args.iter());
                self.tensor_op(m, &method, &args, &raw, false)
            }
            Kind::Tensors => {
                if method == "len" || method == "iter" || method == "clone" {
                    (quote!(#recv.#method()), Kind::Other)
                } else {
                    self.error(
                        m,
                        "a list of tensors can only be indexed, given to `cat` or destructured",
                    )
                }
            }
            Kind::Module(_) => self.error(
                m,
                "a child module is called as `block(x)` or `block.forward(x)`",
            ),
            _ => {
                if args.iter().skip(1).any(|(_, k)| !matches!(k, Kind::Other)) {
                    return self.error(m, format!("this method cannot take tensors; {VOCABULARY}"));
                }
                let method = &m.method;
                let turbofish = &m.turbofish;
                let rest = args.iter().skip(1).map(|(ts, _)| ts);
                let dot = m.dot_token;
                (
                    quote!(#recv #dot #method #turbofish (#(#rest),*)),
                    Kind::Other,
                )
            }
        }
    }

    fn if_expr(&mut self, i: &syn::ExprIf) -> (TokenStream, Kind) {
        self.scopes.push(HashMap::new());
        let cond = match &*i.cond {
            syn::Expr::Let(l) => self.if_let(l),
            c => {
                let (ts, k) = self.expr(c);
                if !matches!(k, Kind::Other) || self.mentions_tensor(c.to_token_stream()) {
                    self.scopes.pop();
                    return self.error(c, TENSOR_CONDITION);
                }
                ts
            }
        };
        let (then, kind) = self.block(&i.then_branch);
        self.scopes.pop();
        let els = i.else_branch.as_ref().map(|(e, rest)| {
            let (ts, _) = self.expr(rest);
            quote!(#e #ts)
        });
        (quote!(if #cond #then #els), kind)
    }

    /// `let Some(n) = &self.norm` binds `n` to the optional child; any
    /// other `let` must be on plain values.
    fn if_let(&mut self, l: &syn::ExprLet) -> TokenStream {
        let optional = match &*l.expr {
            syn::Expr::Reference(r) => self_field(&r.expr),
            syn::Expr::MethodCall(m) if m.method == "as_ref" || m.method == "as_mut" => {
                self_field(&m.receiver)
            }
            _ => None,
        };
        if let (Some(member), syn::Pat::TupleStruct(ts)) = (optional, &*l.pat)
            && let [syn::Pat::Ident(pi)] = ts.elems.iter().collect::<Vec<_>>().as_slice()
        {
            let ident = &pi.ident;
            self.bind(
                ident,
                Kind::Module(ModVar {
                    field: member_name(member),
                    index: None,
                }),
            );
            let scrutinee = if self.train {
                quote!(&mut self.#member)
            } else {
                quote!(&self.#member)
            };
            return quote!(let ::core::option::Option::Some(#ident) = #scrutinee);
        }
        let (ts, k) = self.expr(&l.expr);
        if !matches!(k, Kind::Other) || self.mentions_tensor(l.expr.to_token_stream()) {
            self.error(&l.expr, TENSOR_CONDITION);
        }
        self.bind_all(&l.pat);
        let pat = &l.pat;
        quote!(let #pat = #ts)
    }

    fn for_loop(&mut self, f: &syn::ExprForLoop) -> (TokenStream, Kind) {
        let label = &f.label;
        // The module list and whether the loop enumerates it.
        let list = match &*f.expr {
            syn::Expr::Reference(r) => self_field(&r.expr).map(|m| (m, false)),
            syn::Expr::MethodCall(m) if m.method == "iter" || m.method == "iter_mut" => {
                self_field(&m.receiver).map(|mm| (mm, false))
            }
            syn::Expr::MethodCall(m) if m.method == "enumerate" => match &*m.receiver {
                syn::Expr::MethodCall(inner)
                    if inner.method == "iter" || inner.method == "iter_mut" =>
                {
                    self_field(&inner.receiver).map(|mm| (mm, true))
                }
                _ => None,
            },
            _ => None,
        };
        // A loop over a plain field (`for s in &self.sizes`) is plain Rust:
        // only a loop whose variable is called runs over modules.
        let called = |pat: &syn::Pat| -> bool {
            let ident = match (pat, list.map(|l| l.1)) {
                (syn::Pat::Ident(pi), Some(false)) => Some(&pi.ident),
                (syn::Pat::Tuple(t), Some(true)) if t.elems.len() == 2 => match &t.elems[1] {
                    syn::Pat::Ident(pi) => Some(&pi.ident),
                    _ => None,
                },
                _ => None,
            };
            ident.is_some_and(|i| calls(f.body.to_token_stream(), i))
        };
        let list = list.filter(|_| called(&f.pat));
        if let Some((member, enumerated)) = list {
            self.scopes.push(HashMap::new());
            let (index, module) = match (&*f.pat, enumerated) {
                (syn::Pat::Ident(pi), false) => (format_ident!("__nn_index"), pi.ident.clone()),
                (syn::Pat::Tuple(t), true) if t.elems.len() == 2 => {
                    let index = match &t.elems[0] {
                        syn::Pat::Ident(pi) => pi.ident.clone(),
                        _ => format_ident!("__nn_index"),
                    };
                    match &t.elems[1] {
                        syn::Pat::Ident(pi) => (index, pi.ident.clone()),
                        p => {
                            self.scopes.pop();
                            return self.error(p, "name the module: `for (i, block) in self.blocks.iter().enumerate()`");
                        }
                    }
                }
                (p, _) => {
                    self.scopes.pop();
                    return self.error(p, "name the module: `for block in &self.blocks`");
                }
            };
            self.bind(&index, Kind::Other);
            self.bind(
                &module,
                Kind::Module(ModVar {
                    field: member_name(member),
                    index: Some(index.clone()),
                }),
            );
            let (body, _) = self.block(&f.body);
            self.scopes.pop();
            let iter = if self.train {
                quote!(iter_mut)
            } else {
                quote!(iter)
            };
            return (
                quote! {
                    #label for (#index, #module) in self.#member.#iter().enumerate() {
                        let _ = #index;
                        #body
                    }
                },
                Kind::Other,
            );
        }
        let (iter, k) = self.expr(&f.expr);
        if !matches!(k, Kind::Other) {
            return self.error(
                &f.expr,
                "a `for` loop in a written forward runs over a module list (`for block in &self.blocks`) or plain values (`for i in 0..n`), not tensors",
            );
        }
        self.scopes.push(HashMap::new());
        self.bind_all(&f.pat);
        let (body, _) = self.block(&f.body);
        self.scopes.pop();
        let pat = &f.pat;
        (quote!(#label for #pat in #iter #body), Kind::Other)
    }

    fn match_expr(&mut self, m: &syn::ExprMatch) -> (TokenStream, Kind) {
        let (scrutinee, k) = self.expr(&m.expr);
        if !matches!(k, Kind::Other) || self.mentions_tensor(m.expr.to_token_stream()) {
            return self.error(&m.expr, TENSOR_CONDITION);
        }
        let mut kind = Kind::Other;
        let mut arms = TokenStream::new();
        for (i, arm) in m.arms.iter().enumerate() {
            self.scopes.push(HashMap::new());
            self.bind_all(&arm.pat);
            let guard = arm.guard.as_ref().map(|(iff, g)| {
                let (ts, _) = self.expr(g);
                quote!(#iff #ts)
            });
            let (body, k) = self.expr(&arm.body);
            if i == 0 {
                kind = k;
            }
            self.scopes.pop();
            let pat = &arm.pat;
            arms.extend(quote!(#pat #guard => #body,));
        }
        (quote!(match #scrutinee { #arms }), kind)
    }
}

/// Whether `tokens` call `ident`: `ident(...)` or `ident.forward(...)`.
fn calls(tokens: TokenStream, ident: &syn::Ident) -> bool {
    let tts: Vec<TokenTree> = tokens.into_iter().collect();
    tts.iter().enumerate().any(|(i, tt)| match tt {
        TokenTree::Ident(id) if id == ident => match (tts.get(i + 1), tts.get(i + 2)) {
            (Some(TokenTree::Group(g)), _) => g.delimiter() == proc_macro2::Delimiter::Parenthesis,
            (Some(TokenTree::Punct(p)), Some(TokenTree::Ident(f))) => {
                p.as_char() == '.' && f == "forward"
            }
            _ => false,
        },
        TokenTree::Group(g) => calls(g.stream(), ident),
        _ => false,
    })
}

const TENSOR_CONDITION: &str = "a condition cannot depend on tensor values in a written forward (the backward pass could not follow it); branch on plain values such as fields and sizes";

/// Expands `#[nncore::forward]` on an `impl` block.
pub(crate) fn expand(attr: TokenStream, item: syn::ItemImpl) -> TokenStream {
    let mut cx = Ctxt::default();
    if !attr.is_empty() {
        cx.error_spanned_by(attr, "#[nncore::forward] takes no arguments");
    }
    if let Some((_, path, _)) = &item.trait_ {
        cx.error_spanned_by(
            path,
            "put #[nncore::forward] on an inherent impl block: `impl MyModel { fn forward(&self, x: &Tensor) -> Result<Tensor> { ... } }`",
        );
        return finish(cx, item.to_token_stream());
    }
    let position = item
        .items
        .iter()
        .position(|i| matches!(i, syn::ImplItem::Fn(f) if f.sig.ident == "forward"));
    let Some(position) = position else {
        cx.error_spanned_by(
            &item.self_ty,
            "#[nncore::forward] needs `fn forward(&self, x: &Tensor) -> Result<Tensor>` in this impl block",
        );
        return finish(cx, item.to_token_stream());
    };
    let mut rest = item.clone();
    let syn::ImplItem::Fn(fun) = rest.items.remove(position) else {
        unreachable!("position found a fn");
    };
    let sig = &fun.sig;
    let mut inputs = sig.inputs.iter();
    match inputs.next() {
        Some(syn::FnArg::Receiver(r)) if r.reference.is_some() && r.mutability.is_none() => {}
        _ => cx.error_spanned_by(
            sig,
            "expected `fn forward(&self, x: &Tensor) -> Result<Tensor>`: the forward takes `&self`",
        ),
    }
    let input = match (inputs.next(), inputs.next()) {
        (Some(syn::FnArg::Typed(t)), None) => match &*t.pat {
            syn::Pat::Ident(pi) => Some(pi.clone()),
            p => {
                cx.error_spanned_by(p, "name the input: `x: &Tensor`");
                None
            }
        },
        _ => {
            cx.error_spanned_by(&sig.inputs, "expected `fn forward(&self, x: &Tensor) -> Result<Tensor>`: one tensor in, one tensor out");
            None
        }
    };
    if sig.asyncness.is_some() || sig.constness.is_some() || !sig.generics.params.is_empty() {
        cx.error_spanned_by(sig, "expected `fn forward(&self, x: &Tensor) -> Result<Tensor>` without `async`, `const` or generics");
    }
    let Some(input) = input else {
        return finish(cx, rest.to_token_stream());
    };
    let owner = match &*item.self_ty {
        syn::Type::Path(p) => p.path.segments.last().map(|s| s.ident.unraw().to_string()),
        _ => None,
    };
    let Some(owner) = owner else {
        cx.error_spanned_by(
            &item.self_ty,
            "#[nncore::forward] goes on `impl MyModel { ... }`",
        );
        return finish(cx, rest.to_token_stream());
    };

    let lower = |train: bool, cx: &mut Ctxt| {
        let mut l = Lower {
            train,
            cx,
            scopes: vec![HashMap::new()],
            sites: Vec::new(),
            relu_fused: HashMap::new(),
        };
        l.bind(&input.ident, Kind::Tensor);
        let (body, kind) = l.block(&fun.block);
        // A tail that is a tensor (`self.head(h)`) is the output.
        let body = match kind {
            Kind::Tensor => quote!({ ::core::result::Result::Ok(#body) }),
            _ => body,
        };
        (body, l.sites)
    };
    let (eval_body, _) = lower(false, &mut cx);
    if cx.has_errors() {
        // The errors alone: no half-rewritten body to report more about,
        // and a stand-in `Forward` so that uses of the type do not cascade.
        let (impl_generics, _, where_clause) = item.generics.split_for_impl();
        let self_ty = &item.self_ty;
        let rest_tokens = (!rest.items.is_empty()).then(|| rest.to_token_stream());
        return finish(
            cx,
            quote! {
                #rest_tokens
                #[automatically_derived]
                impl #impl_generics ::nncore::Forward for #self_ty #where_clause {
                    fn forward(&self, _: &::nncore::Tensor) -> ::nncore::Result<::nncore::Tensor> {
                        ::core::unimplemented!()
                    }
                }
                #[automatically_derived]
                impl #impl_generics ::nncore::Backward for #self_ty #where_clause {
                    fn forward_train<'__a>(&'__a mut self, _: &'__a ::nncore::Tensor) -> ::nncore::Result<&'__a ::nncore::Tensor> {
                        ::core::unimplemented!()
                    }
                    fn backward<'__a>(&'__a mut self, _: &'__a ::nncore::Tensor) -> ::nncore::Result<&'__a ::nncore::Tensor> {
                        ::core::unimplemented!()
                    }
                }
            },
        );
    }
    let mut quiet = Ctxt::default();
    let (train_body, sites) = lower(true, &mut quiet);
    // The training pass reports what the inference pass already did.
    let _ = quiet.check();

    let accesses = sites.iter().enumerate().map(|(id, access)| {
        let id = id as u32;
        let body = match access {
            Access::Field(m) => quote_spanned! {m.span()=>
                ::core::option::Option::Some(::nncore::__private_v1::dyn_mut(&mut self.#m))
            },
            Access::Element(m) => quote_spanned! {m.span()=>
                self.#m.get_mut(__site.index).map(::nncore::__private_v1::dyn_mut)
            },
            Access::Optional(m) => quote_spanned! {m.span()=>
                self.#m.as_mut().map(::nncore::__private_v1::dyn_mut)
            },
        };
        quote!(#id => #body,)
    });

    let (impl_generics, _, where_clause) = item.generics.split_for_impl();
    let self_ty = &item.self_ty;
    let span = self_ty.span();
    let x_mut = &input.mutability;
    let x = &input.ident;
    let generated = quote_spanned! {span=>
        #[automatically_derived]
        impl #impl_generics ::nncore::__private_v1::Written for #self_ty #where_clause {
            const NAME: &'static str = #owner;

            #[allow(unused_mut, unused_variables, clippy::all)]
            fn eval(
                &self,
                __cx: &mut ::nncore::__private_v1::Eval<'_, '_>,
                #x_mut #x: ::nncore::Var,
            ) -> ::nncore::Result<::nncore::Var> {
                #[allow(unused_imports)]
                use ::nncore::__private_v1::Engine as _;
                #eval_body
            }

            #[allow(unused_mut, unused_variables, clippy::all)]
            fn record(
                &mut self,
                __cx: &mut ::nncore::Tape,
                #x_mut #x: ::nncore::Var,
            ) -> ::nncore::Result<::nncore::Var> {
                #[allow(unused_imports)]
                use ::nncore::__private_v1::Engine as _;
                #train_body
            }

            fn tape_mut(&mut self) -> &mut ::nncore::Tape {
                ::nncore::__private_v1::HasTape::tape_mut(self)
            }

            fn child_mut(
                &mut self,
                __site: ::nncore::__private_v1::Site,
            ) -> ::core::option::Option<&mut dyn ::nncore::Backward> {
                match __site.id {
                    #(#accesses)*
                    _ => ::core::option::Option::None,
                }
            }
        }

        #[automatically_derived]
        impl #impl_generics ::nncore::Forward for #self_ty #where_clause {
            ::nncore::__written_forward_methods!();
        }

        #[automatically_derived]
        impl #impl_generics ::nncore::Backward for #self_ty #where_clause {
            ::nncore::__written_backward_methods!();
        }
    };
    let rest_tokens = if rest.items.is_empty() {
        TokenStream::new()
    } else {
        rest.to_token_stream()
    };
    finish(cx, quote!(#rest_tokens #generated))
}

/// `tokens` spanned at `span`, a span of the user's forward: compiler
/// errors about them are then reported there, not at the attribute. Only
/// for tokens that name what the user wrote (`&mut self.fc`).
fn relocate(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut tt| {
            if let proc_macro2::TokenTree::Group(g) = &tt {
                let mut group = proc_macro2::Group::new(g.delimiter(), relocate(g.stream(), span));
                group.set_span(span);
                tt = proc_macro2::TokenTree::Group(group);
            } else {
                tt.set_span(span);
            }
            tt
        })
        .collect()
}

fn finish(cx: Ctxt, tokens: TokenStream) -> TokenStream {
    match cx.check() {
        Ok(()) => tokens,
        Err(e) => {
            let mut out = e.into_compile_error();
            out.extend(tokens);
            out
        }
    }
}
