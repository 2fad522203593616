//! A small JSON reader for what `wagg_init` receives (`abi.Config`): the
//! config comes from the host, but is read as hostile input all the same.

use crate::spec::{Type, Window, WindowKind};

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
    depth: usize,
}

type R<T> = Result<T, String>;

fn syntax() -> String {
    "wagg: config: not the JSON of an abi.Config".to_string()
}

impl<'a> Reader<'a> {
    fn ws(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }
    fn lit(&mut self, c: u8) -> bool {
        self.ws();
        if self.i < self.b.len() && self.b[self.i] == c {
            self.i += 1;
            return true;
        }
        false
    }
    fn word(&mut self, w: &[u8]) -> bool {
        self.ws();
        if self.b[self.i..].starts_with(w) {
            self.i += w.len();
            return true;
        }
        false
    }
    /// A string; None for one with escapes (no name or kind needs them).
    fn string(&mut self) -> R<Option<&'a [u8]>> {
        if !self.lit(b'"') {
            return Err(syntax());
        }
        let start = self.i;
        let mut esc = false;
        while self.i < self.b.len() && self.b[self.i] != b'"' {
            match self.b[self.i] {
                c if c < 0x20 => return Err(syntax()),
                b'\\' => {
                    esc = true;
                    self.i += 1;
                }
                _ => {}
            }
            self.i += 1;
        }
        if self.i >= self.b.len() {
            return Err(syntax());
        }
        let s = &self.b[start..self.i];
        self.i += 1;
        Ok(if esc { None } else { Some(s) })
    }
    fn integer(&mut self) -> R<i64> {
        self.ws();
        let start = self.i;
        if self.i < self.b.len() && self.b[self.i] == b'-' {
            self.i += 1;
        }
        let digits = self.i;
        while self.i < self.b.len() && self.b[self.i].is_ascii_digit() {
            self.i += 1;
        }
        if self.i == digits
            || (self.i < self.b.len() && matches!(self.b[self.i], b'.' | b'e' | b'E'))
        {
            return Err(syntax());
        }
        std::str::from_utf8(&self.b[start..self.i])
            .unwrap()
            .parse::<i64>()
            .map_err(|_| syntax())
    }
    fn skip(&mut self) -> R<()> {
        self.ws();
        self.depth += 1;
        if self.i >= self.b.len() || self.depth > 64 {
            return Err(syntax());
        }
        match self.b[self.i] {
            b'{' => {
                self.i += 1;
                if !self.lit(b'}') {
                    loop {
                        self.string()?;
                        if !self.lit(b':') {
                            return Err(syntax());
                        }
                        self.skip()?;
                        if !self.lit(b',') {
                            break;
                        }
                    }
                    if !self.lit(b'}') {
                        return Err(syntax());
                    }
                }
            }
            b'[' => {
                self.i += 1;
                if !self.lit(b']') {
                    loop {
                        self.skip()?;
                        if !self.lit(b',') {
                            break;
                        }
                    }
                    if !self.lit(b']') {
                        return Err(syntax());
                    }
                }
            }
            b'"' => {
                self.string()?;
            }
            b't' | b'f' | b'n' => {
                if !(self.word(b"true") || self.word(b"false") || self.word(b"null")) {
                    return Err(syntax());
                }
            }
            _ => {
                let start = self.i;
                while self.i < self.b.len() && b"+-.eE0123456789".contains(&self.b[self.i]) {
                    self.i += 1;
                }
                if self.i == start {
                    return Err(syntax());
                }
            }
        }
        self.depth -= 1;
        Ok(())
    }

    fn object(&mut self, mut field: impl FnMut(&mut Self, &[u8]) -> R<()>) -> R<()> {
        if !self.lit(b'{') {
            return Err(syntax());
        }
        if self.lit(b'}') {
            return Ok(());
        }
        loop {
            let k = self.string()?.unwrap_or(b"");
            if !self.lit(b':') {
                return Err(syntax());
            }
            field(self, k)?;
            if !self.lit(b',') {
                break;
            }
        }
        if !self.lit(b'}') {
            return Err(syntax());
        }
        Ok(())
    }

    fn window(&mut self) -> R<Window> {
        let mut name: Option<Option<&[u8]>> = None;
        let mut kind: Option<Option<&[u8]>> = None;
        let (mut size, mut slide) = (0i64, 0i64);
        self.object(|r, k| {
            match k {
                b"name" => name = Some(r.string()?),
                b"kind" => kind = Some(r.string()?),
                b"size_ms" => size = r.integer()?,
                b"slide_ms" => slide = r.integer()?,
                _ => r.skip()?,
            }
            Ok(())
        })?;
        let name = String::from_utf8_lossy(name.flatten().unwrap_or(b"")).into_owned();
        let kind = match kind.flatten() {
            Some(b"global") => WindowKind::Global,
            Some(b"tumbling") => WindowKind::Tumbling,
            Some(b"hopping") => WindowKind::Hopping,
            _ => {
                return Err(format!(
                    "wagg: window {}.kind: want tumbling, hopping or global",
                    name
                ))
            }
        };
        let w = Window {
            name,
            kind,
            size_ms: size,
            slide_ms: slide,
        };
        w.validate().map_err(|e| format!("wagg: window {}", e))?;
        Ok(w)
    }
}

/// What a build that wrote a snapshot declared (`abi.Config.migrate_from`,
/// an `abi.Schema`): what a migration needs to read the snapshot.
pub(crate) struct FromSchema {
    pub version: i64,
    pub keys: Vec<Type>,
    pub metrics: Vec<(String, String, Type)>, // name, kind, type
}

impl<'a> Reader<'a> {
    fn name(&mut self) -> R<String> {
        match self.string()? {
            Some(s) => Ok(String::from_utf8_lossy(s).into_owned()),
            None => Err(syntax()),
        }
    }
    fn ty(&mut self) -> R<Type> {
        match self.string()? {
            Some(b"int64") => Ok(Type::Int64),
            Some(b"float64") => Ok(Type::Float64),
            Some(b"string") => Ok(Type::String),
            _ => {
                Err("wagg: config migrate_from: a type is not int64, float64 or string".to_string())
            }
        }
    }
    fn array(&mut self, mut item: impl FnMut(&mut Self) -> R<()>) -> R<()> {
        if !self.lit(b'[') {
            return Err(syntax());
        }
        if self.lit(b']') {
            return Ok(());
        }
        loop {
            item(self)?;
            if !self.lit(b',') {
                break;
            }
        }
        if !self.lit(b']') {
            return Err(syntax());
        }
        Ok(())
    }
    fn from_schema(&mut self) -> R<FromSchema> {
        let mut f = FromSchema {
            version: 1,
            keys: Vec::new(),
            metrics: Vec::new(),
        };
        self.object(|r, k| {
            match k {
                b"keys" => r.array(|r| {
                    let mut t = None;
                    r.object(|r, k| {
                        match k {
                            b"type" => t = Some(r.ty()?),
                            _ => r.skip()?,
                        }
                        Ok(())
                    })?;
                    f.keys.push(t.ok_or_else(syntax)?);
                    Ok(())
                })?,
                b"metrics" => r.array(|r| {
                    let (mut name, mut kind, mut t) = (None, None, None);
                    r.object(|r, k| {
                        match k {
                            b"name" => name = Some(r.name()?),
                            b"kind" => kind = Some(r.name()?),
                            b"type" => t = Some(r.ty()?),
                            _ => r.skip()?,
                        }
                        Ok(())
                    })?;
                    match (name, kind, t) {
                        (Some(n), Some(k), Some(t)) => f.metrics.push((n, k, t)),
                        _ => return Err(syntax()),
                    }
                    Ok(())
                })?,
                b"state" => {
                    if !r.word(b"null") {
                        r.object(|r, k| {
                            match k {
                                b"version" => f.version = r.integer()?,
                                _ => r.skip()?,
                            }
                            Ok(())
                        })?;
                    }
                }
                _ => r.skip()?,
            }
            Ok(())
        })?;
        if f.metrics.is_empty() || f.metrics.len() > 64 || f.keys.len() > 16 {
            return Err(
                "wagg: config migrate_from: 1 to 64 metrics and at most 16 keys".to_string(),
            );
        }
        Ok(f)
    }
}

/// An `abi.Config`: its windows, validated, the host's limit of groups per
/// pane (0: none), and the schema of the build whose snapshot is to be
/// migrated.
pub(crate) struct Config {
    pub windows: Vec<Window>,
    pub max_groups: i64,
    pub migrate_from: Option<FromSchema>,
}

/// Reads an `abi.Config`.
pub(crate) fn parse_config(b: &[u8]) -> R<Config> {
    let mut r = Reader { b, i: 0, depth: 0 };
    let mut abi = -1i64;
    let mut max_groups = 0i64;
    let mut windows = Vec::new();
    let mut migrate_from = None;
    r.object(|r, k| {
        match k {
            b"abi" => abi = r.integer()?,
            b"max_groups" => max_groups = r.integer()?,
            b"migrate_from" => {
                if !r.word(b"null") {
                    migrate_from = Some(r.from_schema()?);
                }
            }
            b"windows" => {
                windows.clear();
                if r.word(b"null") {
                    return Ok(());
                }
                if !r.lit(b'[') {
                    return Err(syntax());
                }
                if !r.lit(b']') {
                    loop {
                        if windows.len() == 255 {
                            return Err("wagg: more than 255 windows".to_string());
                        }
                        windows.push(r.window()?);
                        if !r.lit(b',') {
                            break;
                        }
                    }
                    if !r.lit(b']') {
                        return Err(syntax());
                    }
                }
            }
            _ => r.skip()?,
        }
        Ok(())
    })?;
    r.ws();
    if r.i != b.len() {
        return Err(syntax());
    }
    if abi != 1 {
        return Err(format!("wagg: host speaks ABI {}, this SDK speaks 1", abi));
    }
    if windows.is_empty() {
        return Err("wagg: 0 windows, want 1 to 255".to_string());
    }
    Ok(Config {
        windows,
        max_groups,
        migrate_from,
    })
}
