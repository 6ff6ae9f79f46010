//! Finding tape images, and staging them for reading. An image is one file; the volumes of a
//! split set (`PATH.001`, `PATH.002`, … as `reel export --capacity` and `dump -M` name them,
//! or `PATH001`, …); volumes named one by one with commas (`a,b,c`); or, for a reel tape, the
//! directory `restore -x` extracted it into. `import`, `verify-tape`, a restore from tapes,
//! `rebuild-catalog --from-tapes` and `ingest-dump` all find images here.
//!
//! A read of data that purge removed from the spool (`restore`, `cat`, `export-plain`,
//! `mount`) finds the tapes it needs in [`TapeSources`], the `--tapes DIR` and `--tape IMAGE`
//! arguments those commands share, and stages them with [`supply`]: one way to give tapes,
//! whichever command reads them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::record::{DumpRecord, TapeDumpSummary};
use crate::spool::Spool;
use crate::store::ChunkReader;
use crate::tape::{bsd, image, payload};

/// The volume files of one image argument, in order: `a,b,c`; an existing file or directory;
/// or a prefix whose `PREFIX.001`, `PREFIX.002`, … (or `PREFIX001`, …) exist.
pub fn image_volumes(arg: &Path) -> Result<Vec<PathBuf>> {
    let text = arg.to_string_lossy();
    if text.contains(',') && !arg.exists() {
        let volumes: Vec<PathBuf> = text
            .split(',')
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .collect();
        if volumes.is_empty() {
            return Err(Error::usage(format!("image {text:?} names no file")));
        }
        return Ok(volumes);
    }
    if arg.exists() {
        return Ok(vec![arg.to_path_buf()]);
    }
    for sep in [".", ""] {
        let nth = |n: u32| PathBuf::from(format!("{text}{sep}{n:03}"));
        let volumes: Vec<PathBuf> = (1..).map(nth).take_while(|v| v.exists()).collect();
        if !volumes.is_empty() {
            return Ok(volumes);
        }
    }
    Err(Error::usage(format!(
        "image {text} not found (nor {text}.001 or {text}001, the first volume of a split set); \
         give a file, a prefix, or the volumes joined with commas"
    )))
}

/// The images in folder `dir`, each as its volume files: single files, split sets (`X.001`,
/// `X.002`, … grouped into one), and directories `restore -x` extracted a reel tape into
/// (holding `reel/LABEL`). Other directories are passed over.
pub fn images_in(dir: &Path) -> Result<Vec<Vec<PathBuf>>> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .flatten()
        .map(|e| e.path())
        .collect();
    names.sort();
    let mut out = Vec::new();
    let mut split: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for p in names {
        if p.is_dir() {
            if p.join(payload::LABEL_FILE).exists() {
                out.push(vec![p]);
            }
            continue;
        }
        let s = p.display().to_string();
        match s.rsplit_once('.') {
            Some((prefix, n)) if n.len() == 3 && n.bytes().all(|b| b.is_ascii_digit()) => {
                split.entry(prefix.to_string()).or_default().push(p)
            }
            _ => out.push(vec![p]),
        }
    }
    out.extend(split.into_values());
    Ok(out)
}

/// A reel tape's payload directory, ready to read: the folder `restore -x` extracted, or the
/// image extracted under the spool's `tmp/`, removed again when this is dropped (a killed
/// command's leftovers go at the spool's next write open).
pub struct Staged {
    dir: PathBuf,
    remove: bool,
    /// The tape's CATALOG, once verified (`stage_tapes`).
    catalog: Option<payload::TapeCatalog>,
}

impl Staged {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A staging folder `tmp/WHAT-PID-N` of `spool`, created now and removed on drop.
    pub fn scratch(spool: &Spool, what: &str, n: usize) -> Result<Staged> {
        let dir = spool
            .tmp_dir()
            .join(format!("{what}-{}-{n}", std::process::id()));
        let staged = Staged {
            dir,
            remove: true,
            catalog: None,
        };
        crate::fsutil::create_dir_all(&staged.dir).map_err(|e| Error::io(&staged.dir, e))?;
        Ok(staged)
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if self.remove {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Make the reel tape `volumes` (from `image_volumes` or `images_in`) readable as a payload
/// directory: an extracted folder as it is, an image extracted into a scratch folder of
/// `spool` named `what` and `n` (the image's place among the command's).
pub fn stage(spool: &Spool, volumes: &[PathBuf], what: &str, n: usize) -> Result<Staged> {
    if let [one] = volumes
        && one.is_dir()
    {
        if one.join(payload::LABEL_FILE).exists() {
            return Ok(Staged {
                dir: one.clone(),
                remove: false,
                catalog: None,
            });
        }
        return Err(Error::usage(format!(
            "{} is a directory without {}: give a tape image, or the directory `restore -x` \
             extracted it into",
            one.display(),
            payload::LABEL_FILE
        )));
    }
    let staged = Staged::scratch(spool, what, n)?;
    image::extract_image(volumes, staged.dir())?;
    Ok(staged)
}

/// Where a read finds the tapes it needs: a folder of images (`--tapes DIR`) and images named
/// one by one (`--tape IMAGE`, repeatable; `--tape LABEL=IMAGE` says which tape it is, for an
/// image whose header does not).
#[derive(Clone, Debug, Default)]
pub struct TapeSources {
    pub dir: Option<PathBuf>,
    pub images: Vec<String>,
}

impl TapeSources {
    /// Were no tapes given?
    pub fn is_empty(&self) -> bool {
        self.dir.is_none() && self.images.is_empty()
    }

    /// The images to look through, each as its volumes with the label it is for: the `--tape`
    /// arguments first, in the order given, then the images in the folder.
    fn candidates(&self) -> Result<Vec<(Vec<PathBuf>, Option<String>)>> {
        let mut out = Vec::new();
        for arg in &self.images {
            let path = Path::new(arg);
            let (volumes, label) = match arg.split_once('=') {
                Some((label, p)) if !path.exists() && !label.is_empty() => {
                    (image_volumes(Path::new(p))?, Some(label.to_string()))
                }
                _ => (image_volumes(path)?, None),
            };
            let label = label.or_else(|| header_label(&volumes));
            out.push((volumes, label));
        }
        if let Some(dir) = &self.dir {
            for volumes in images_in(dir)? {
                let label = header_label(&volumes);
                out.push((volumes, label));
            }
        }
        Ok(out)
    }
}

/// The label an image says it holds: an extracted folder's `reel/LABEL`, else the label in the
/// dump header of its first volume (the first 15 characters of a reel tape's label). None for
/// a file that is not a dump image.
fn header_label(volumes: &[PathBuf]) -> Option<String> {
    let first = volumes.first()?;
    if first.is_dir() {
        let text = std::fs::read_to_string(first.join(payload::LABEL_FILE)).ok()?;
        return text
            .lines()
            .find_map(|l| l.strip_prefix("label:"))
            .map(|l| l.trim().to_string());
    }
    let label = bsd::DumpReader::open(&volumes[..1])
        .ok()?
        .info()
        .label
        .clone();
    (!label.is_empty()).then_some(label)
}

/// Could the image whose header says `found` be tape `label`? A header keeps 15 characters.
fn may_hold(found: &str, label: &str) -> bool {
    found == label || (found.chars().count() >= 15 && label.starts_with(found))
}

/// The tapes `labels` (in the order to read them) found among `sources`, staged and checked
/// under the spool's key (a tape sealed under another key, or a plain tape for an encrypted
/// spool, is refused, naming both): returns the pack files to read and the staged folders
/// holding them. A tape not found is an error naming it when `all` is set, and is left out
/// (returned in the third item) when not.
pub fn stage_tapes(
    spool: &Spool,
    labels: &[String],
    sources: &TapeSources,
    all: bool,
) -> Result<(Vec<PathBuf>, Vec<Staged>, Vec<String>)> {
    let candidates = sources.candidates()?;
    let key = payload::TapeKey::of_spool(spool);
    let mut packs = Vec::new();
    let mut staged = Vec::new();
    let mut missing = Vec::new();
    for (n, label) in labels.iter().enumerate() {
        let mut found = None;
        let mut wrong = Vec::new();
        for (volumes, _) in candidates
            .iter()
            .filter(|(_, l)| l.as_deref().is_some_and(|l| may_hold(l, label)))
        {
            let mut tape = stage(spool, volumes, "read", n)?;
            // An image under another key may be another site's tape of the same label: say
            // so, and look on.
            let cat = match payload::verify_payload(tape.dir(), &key) {
                Err(Error::Key(m)) => {
                    wrong.push(format!("{}: {m}", volumes[0].display()));
                    continue;
                }
                other => other?,
            };
            if &cat.label == label {
                payload::same_key_as_spool(label, cat.fingerprint(), spool.keys(), "read")?;
                tape.catalog = Some(cat);
                found = Some(tape);
                break;
            }
            wrong.push(format!("{} holds tape {}", volumes[0].display(), cat.label));
        }
        let Some(tape) = found else {
            if all {
                return Err(Error::usage(format!(
                    "this read needs tapes {} (in that order); tape {label} is not among the \
                     images given ({}){}; give its image with --tape IMAGE or a folder holding \
                     it with --tapes DIR",
                    labels.join(", "),
                    sources.describe(),
                    if wrong.is_empty() {
                        String::new()
                    } else {
                        format!("; {}", wrong.join(", "))
                    }
                )));
            }
            missing.push(label.clone());
            continue;
        };
        let pdir = tape.dir().join(payload::PACKS_DIR);
        let mut list: Vec<PathBuf> = std::fs::read_dir(&pdir)
            .map_err(|e| Error::io(&pdir, e))?
            .flatten()
            .map(|e| e.path())
            .collect();
        list.sort();
        packs.extend(list);
        staged.push(tape);
    }
    Ok((packs, staged, missing))
}

impl TapeSources {
    /// The sources, as the admin gave them, for messages.
    fn describe(&self) -> String {
        let mut parts: Vec<String> = self.images.iter().map(|i| format!("--tape {i}")).collect();
        if let Some(d) = &self.dir {
            parts.push(format!("--tapes {}", d.display()));
        }
        parts.join(", ")
    }
}

/// Let `reader` read the tapes `labels` (the tapes a read needs, in order; none when all its
/// data is on the spool) from `sources`. With tapes needed and none given, the error names
/// them and says how to give them. The returned guards remove the staged copies when dropped.
pub fn supply(
    spool: &Spool,
    reader: &mut ChunkReader,
    labels: &[String],
    sources: &TapeSources,
) -> Result<Vec<Staged>> {
    if labels.is_empty() {
        return Ok(Vec::new());
    }
    if sources.is_empty() {
        let needs = match labels {
            [one] => format!("tape {one}"),
            _ => format!("tapes {}, in that order", labels.join(", ")),
        };
        return Err(Error::usage(format!(
            "some of this data is on tape only (purge removed it from the spool): it needs \
             {needs} (`reel tapes` lists them); give --tapes DIR (a folder of tape images) or \
             --tape IMAGE"
        )));
    }
    let (packs, guards, _) = stage_tapes(spool, labels, sources, true)?;
    reader.add_packs(&packs)?;
    Ok(guards)
}

/// The record of dump `s`, which only tapes hold (prune or forget removed it from the catalog;
/// the media catalog places it on tape `label`), read from the CATALOG of the `staged` tapes
/// and named by this spool's ids, as `reel tapes` lists it.
pub fn tape_dump_record(staged: &[Staged], label: &str, s: &TapeDumpSummary) -> Result<DumpRecord> {
    for cat in staged.iter().filter_map(|g| g.catalog.as_ref()) {
        if let Some(td) = cat
            .dumps
            .iter()
            .find(|d| d.volume == s.volume && d.time_ns == s.time_ns)
        {
            let mut d = td.to_record();
            d.id = s.id;
            d.base = s.chain.last().copied();
            d.chain = s.chain.clone();
            return Ok(d);
        }
    }
    Err(Error::usage(format!(
        "the tapes {} do not hold dump {} of volume {} ({}), which the media catalog places on tape {label}",
        s.tapes_needed.join(", "),
        s.id,
        s.volume,
        crate::timefmt::format_rfc3339(s.time_ns)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn arguments_expand_to_volumes() {
        let d = tempfile::tempdir().unwrap();
        let base = d.path().join("set.dump");
        for n in 1..=3 {
            fs::write(format!("{}{n:03}", base.display()), b"x").unwrap();
        }
        let v = image_volumes(&base).unwrap();
        assert_eq!(v.len(), 3);
        assert!(v[2].ends_with("set.dump003"));
        let dotted = d.path().join("tape");
        fs::write(d.path().join("tape.001"), b"x").unwrap();
        fs::write(d.path().join("tape.002"), b"x").unwrap();
        assert_eq!(
            image_volumes(&dotted).unwrap(),
            vec![d.path().join("tape.001"), d.path().join("tape.002")]
        );
        assert_eq!(
            image_volumes(Path::new("a,b")).unwrap(),
            vec![PathBuf::from("a"), PathBuf::from("b")]
        );
        let e = image_volumes(&d.path().join("nothing")).unwrap_err();
        assert!(e.to_string().contains("not found"), "{e}");
    }

    #[test]
    fn a_folder_groups_split_sets_and_keeps_extracted_tapes() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["a.tape", "b.001", "b.002", "c.img"] {
            fs::write(dir.path().join(f), b"x").unwrap();
        }
        fs::create_dir_all(dir.path().join("extracted/reel")).unwrap();
        fs::write(dir.path().join("extracted").join(payload::LABEL_FILE), b"x").unwrap();
        fs::create_dir_all(dir.path().join("other")).unwrap();
        let imgs = images_in(dir.path()).unwrap();
        assert_eq!(imgs.len(), 4, "{imgs:?}");
        assert!(imgs.iter().any(|v| v.len() == 2));
        assert!(imgs.iter().any(|v| v[0].ends_with("extracted")));
    }
}
