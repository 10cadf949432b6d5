//! Just enough HLS (RFC 8216) for a live origin: parsing what an encoder
//! pushes (media and master playlists) and rendering what players fetch.
//!
//! Parsers take untrusted text: sizes are capped, numbers are checked, and a
//! playlist that does not parse is refused whole.

use std::fmt::Write as _;

use crate::error::OriginError;

/// Largest playlist accepted from an encoder.
pub const MAX_PLAYLIST: usize = 256 * 1024;
/// Most entries in a pushed playlist.
pub const MAX_ENTRIES: usize = 2048;
/// Longest segment duration accepted, seconds.
pub const MAX_SEGMENT_SECONDS: f64 = 60.0;

/// One segment line of a pushed media playlist.
#[derive(Debug, Clone, PartialEq)]
pub struct PushedEntry {
    /// The URI as written (usually a bare file name).
    pub uri: String,
    /// Duration from `#EXTINF`, milliseconds.
    pub duration_ms: u32,
    /// `#EXT-X-DISCONTINUITY` came before it.
    pub discontinuity: bool,
    /// `#EXT-X-PROGRAM-DATE-TIME`, Unix milliseconds.
    pub program_date_time_ms: Option<u64>,
}

/// A media playlist as an encoder pushed it.
#[derive(Debug, Clone, PartialEq)]
pub struct PushedMedia {
    /// `#EXT-X-MEDIA-SEQUENCE` (0 when absent).
    pub media_sequence: u64,
    /// The segments, in order.
    pub entries: Vec<PushedEntry>,
    /// `#EXT-X-ENDLIST` was present.
    pub ended: bool,
}

fn bad(msg: impl Into<String>) -> OriginError {
    OriginError::BadPlaylist(msg.into())
}

fn lines(text: &str) -> Result<impl Iterator<Item = (usize, &str)>, OriginError> {
    if text.len() > MAX_PLAYLIST {
        return Err(bad(format!("over {MAX_PLAYLIST} bytes")));
    }
    let mut it = text
        .lines()
        .map(str::trim)
        .enumerate()
        .filter(|(_, l)| !l.is_empty());
    match it.next() {
        Some((_, "#EXTM3U")) => Ok(it.map(|(n, l)| (n + 1, l))),
        _ => Err(bad("does not start with #EXTM3U")),
    }
}

/// A URI the origin accepts in a pushed playlist: a relative file name
/// (optionally with a path, of which only the last part counts).
fn uri_file_name(uri: &str) -> Option<&str> {
    if uri.split('/').any(|part| part == "..") {
        return None;
    }
    let name = uri.rsplit('/').next()?;
    let ok = !name.is_empty()
        && name.len() <= 128
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    ok.then_some(name)
}

/// Parses an encoder's media playlist.
pub fn parse_media(text: &str) -> Result<PushedMedia, OriginError> {
    let mut media_sequence = 0;
    let mut entries = Vec::new();
    let mut ended = false;
    let mut pending_dur: Option<u32> = None;
    let mut pending_disc = false;
    let mut pending_pdt = None;
    let mut saw_target = false;
    for (n, line) in lines(text)? {
        if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            media_sequence = v
                .parse()
                .map_err(|_| bad(format!("line {n}: bad EXT-X-MEDIA-SEQUENCE")))?;
        } else if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            let t: u64 = v
                .parse()
                .map_err(|_| bad(format!("line {n}: bad EXT-X-TARGETDURATION")))?;
            if t == 0 || t as f64 > MAX_SEGMENT_SECONDS {
                return Err(bad(format!("line {n}: EXT-X-TARGETDURATION out of range")));
            }
            saw_target = true;
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            let secs = v.split(',').next().unwrap_or("");
            let secs: f64 = secs
                .parse()
                .map_err(|_| bad(format!("line {n}: bad EXTINF duration")))?;
            if !(secs > 0.0 && secs <= MAX_SEGMENT_SECONDS) {
                return Err(bad(format!("line {n}: EXTINF duration out of range")));
            }
            pending_dur = Some((secs * 1000.0).round() as u32);
        } else if line == "#EXT-X-DISCONTINUITY" {
            pending_disc = true;
        } else if let Some(v) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
            pending_pdt = Some(
                parse_date_time(v)
                    .ok_or_else(|| bad(format!("line {n}: bad PROGRAM-DATE-TIME")))?,
            );
        } else if line == "#EXT-X-ENDLIST" {
            ended = true;
        } else if line.starts_with('#') {
            // Other tags (VERSION, INDEPENDENT-SEGMENTS, comments) do not
            // change what the origin serves.
        } else {
            let Some(duration_ms) = pending_dur.take() else {
                return Err(bad(format!("line {n}: segment URI without EXTINF")));
            };
            let uri = uri_file_name(line)
                .ok_or_else(|| bad(format!("line {n}: segment URI is not a plain file name")))?;
            if entries.len() == MAX_ENTRIES {
                return Err(bad(format!("more than {MAX_ENTRIES} segments")));
            }
            entries.push(PushedEntry {
                uri: uri.to_owned(),
                duration_ms,
                discontinuity: std::mem::take(&mut pending_disc),
                program_date_time_ms: pending_pdt.take(),
            });
        }
    }
    if !saw_target {
        return Err(bad("no EXT-X-TARGETDURATION (is this a master playlist?)"));
    }
    Ok(PushedMedia {
        media_sequence,
        entries,
        ended,
    })
}

/// One variant of a pushed master playlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    /// The rendition (the first path part of the variant's URI).
    pub rendition: String,
    /// The `#EXT-X-STREAM-INF` attributes, as pushed (checked printable).
    pub attributes: String,
}

/// Parses an encoder's master playlist: variants whose URI is
/// `{rendition}/{file}.m3u8`.
pub fn parse_master(text: &str) -> Result<Vec<Variant>, OriginError> {
    let mut out = Vec::new();
    let mut attrs: Option<String> = None;
    for (n, line) in lines(text)? {
        if let Some(a) = line.strip_prefix("#EXT-X-STREAM-INF:") {
            if a.len() > 1024 || a.chars().any(char::is_control) || !a.contains("BANDWIDTH=") {
                return Err(bad(format!("line {n}: bad EXT-X-STREAM-INF")));
            }
            attrs = Some(a.to_owned());
        } else if line.starts_with('#') {
            continue;
        } else if let Some(a) = attrs.take() {
            let mut parts = line.split('/');
            let (Some(r), Some(_file), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(bad(format!(
                    "line {n}: variant URI is not rendition/file.m3u8"
                )));
            };
            if out.len() == 64 {
                return Err(bad("more than 64 variants"));
            }
            out.push(Variant {
                rendition: r.to_owned(),
                attributes: a,
            });
        } else {
            return Err(bad(format!("line {n}: URI without EXT-X-STREAM-INF")));
        }
    }
    if out.is_empty() {
        return Err(bad("no variants"));
    }
    Ok(out)
}

/// Parses an ISO 8601 date-time as HLS writes it
/// (`2026-11-23T15:53:54.892+0000`, `...Z`, `...+00:00`) into Unix ms.
pub fn parse_date_time(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut ms = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let f = &frac[..digits.min(3)];
        ms = f.parse::<i64>().ok()? * 10i64.pow(3 - f.len() as u32);
        rest = &frac[digits..];
    }
    let offset_min = match rest {
        "Z" | "" => 0,
        _ => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let digits: String = rest[1..].chars().filter(|c| *c != ':').collect();
            if digits.len() != 4 || !digits.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            sign * (digits[..2].parse::<i64>().ok()? * 60 + digits[2..].parse::<i64>().ok()?)
        }
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86400 + h * 3600 + mi * 60 + sec - offset_min * 60;
    u64::try_from(secs * 1000 + ms).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// Formats Unix ms as `2026-11-23T15:53:54.892Z`.
pub fn format_date_time(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Inverse of days_from_civil.
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// One segment line of a rendered media playlist.
#[derive(Debug, Clone)]
pub struct RenderEntry<'a> {
    /// Media sequence number.
    pub seq: u64,
    /// File extension (`ts`, `m4s`...).
    pub ext: &'a str,
    /// Duration, ms.
    pub duration_ms: u32,
    /// Discontinuity before this segment.
    pub discontinuity: bool,
    /// Program date-time, Unix ms.
    pub program_date_time_ms: u64,
}

/// Renders a live media playlist.
pub fn render_media(
    target_duration_s: u32,
    discontinuity_sequence: u64,
    entries: &[RenderEntry<'_>],
    ended: bool,
) -> String {
    let mut out = String::with_capacity(128 + entries.len() * 80);
    let first = entries.first().map_or(0, |e| e.seq);
    let _ = write!(
        out,
        "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:{target_duration_s}\n#EXT-X-MEDIA-SEQUENCE:{first}\n#EXT-X-DISCONTINUITY-SEQUENCE:{discontinuity_sequence}\n#EXT-X-INDEPENDENT-SEGMENTS\n"
    );
    for (i, e) in entries.iter().enumerate() {
        if e.discontinuity && i > 0 {
            out.push_str("#EXT-X-DISCONTINUITY\n");
        }
        let _ = write!(
            out,
            "#EXT-X-PROGRAM-DATE-TIME:{}\n#EXTINF:{}.{:03},\n{}.{}\n",
            format_date_time(e.program_date_time_ms),
            e.duration_ms / 1000,
            e.duration_ms % 1000,
            e.seq,
            e.ext
        );
    }
    if ended {
        out.push_str("#EXT-X-ENDLIST\n");
    }
    out
}

/// Renders a master playlist from `(rendition, attributes)` pairs.
pub fn render_master<'a>(variants: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    for (r, attrs) in variants {
        let _ = write!(out, "#EXT-X-STREAM-INF:{attrs}\n{r}/index.m3u8\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FFMPEG_MEDIA: &str = "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:2\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXTINF:2.000000,\nseg_00002.ts\n#EXT-X-DISCONTINUITY\n#EXTINF:1.960000,\n#EXT-X-PROGRAM-DATE-TIME:2026-11-23T15:53:54.892+0000\nseg_00003.ts\n";

    #[test]
    fn parses_what_ffmpeg_pushes() {
        let p = parse_media(FFMPEG_MEDIA).unwrap();
        assert_eq!(p.media_sequence, 2);
        assert_eq!(p.entries.len(), 2);
        assert_eq!(p.entries[0].uri, "seg_00002.ts");
        assert_eq!(p.entries[1].duration_ms, 1960);
        assert!(p.entries[1].discontinuity && !p.entries[0].discontinuity);
        assert_eq!(
            p.entries[1].program_date_time_ms,
            parse_date_time("2026-11-23T15:53:54.892Z")
        );
        assert!(!p.ended);
        let master = "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-STREAM-INF:BANDWIDTH=950400,RESOLUTION=640x360,CODECS=\"avc1.64001e,mp4a.40.2\"\n360p/index.m3u8\n\n#EXT-X-STREAM-INF:BANDWIDTH=510400\n240p/index.m3u8\n";
        let v = parse_master(master).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].rendition, "360p");
        assert!(v[0].attributes.starts_with("BANDWIDTH=950400"));
    }

    #[test]
    fn refuses_hostile_playlists() {
        let cases = [
            "",
            "not a playlist",
            "#EXTM3U\n#EXTINF:2,\nseg.ts\n", // no target duration
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\nseg.ts\n", // URI without EXTINF
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:abc,\nseg.ts\n", // bad duration
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:-1,\nseg.ts\n", // negative
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:NaN,\nseg.ts\n", // NaN
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:1e9,\nseg.ts\n", // huge
            "#EXTM3U\n#EXT-X-TARGETDURATION:0\n", // zero target
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\n../../etc/..\n", // traversal
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\nseg ts\n", // odd chars
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:-3\n", // negative seq
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:99999999999999999999999\n",
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\n#EXT-X-PROGRAM-DATE-TIME:yesterday\nseg.ts\n",
        ];
        for c in cases {
            assert!(parse_media(c).is_err(), "{c:?}");
        }
        let huge = format!(
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n{}",
            "#EXTINF:2,\na.ts\n".repeat(30_000)
        );
        assert!(parse_media(&huge).is_err());
        for m in [
            "#EXTM3U\n",
            "#EXTM3U\n360p/index.m3u8\n",
            "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n../../index.m3u8\n",
            "#EXTM3U\n#EXT-X-STREAM-INF:RESOLUTION=1x1\n360p/index.m3u8\n",
        ] {
            assert!(parse_master(m).is_err(), "{m:?}");
        }
    }

    #[test]
    fn date_times_round_trip() {
        for s in [
            "1970-01-01T00:00:00.000Z",
            "2026-11-23T15:53:54.892Z",
            "2000-02-29T23:59:59.999Z",
        ] {
            assert_eq!(format_date_time(parse_date_time(s).unwrap()), s);
        }
        assert_eq!(
            parse_date_time("2026-11-23T16:53:54.892+01:00"),
            parse_date_time("2026-11-23T15:53:54.892Z")
        );
        for bad in [
            "",
            "2026-13-01T00:00:00Z",
            "2026-11-23 15:53:54Z",
            "2026-11-23T15:53:54.Z",
            "2026-11-23T15:53:54+1",
        ] {
            assert_eq!(parse_date_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn renders_a_live_playlist() {
        let e = |seq, disc| RenderEntry {
            seq,
            ext: "ts",
            duration_ms: 2000,
            discontinuity: disc,
            program_date_time_ms: 1_000_000 + seq * 2000,
        };
        let text = render_media(2, 1, &[e(7, true), e(8, false), e(9, true)], false);
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:7\n"));
        assert!(text.contains("#EXT-X-DISCONTINUITY-SEQUENCE:1\n"));
        assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 1);
        assert!(text.contains("#EXTINF:2.000,\n9.ts\n"));
        // What we render, we parse.
        let back = parse_media(&text).unwrap();
        assert_eq!(back.media_sequence, 7);
        assert_eq!(back.entries.len(), 3);
        assert!(back.entries[2].discontinuity);
    }
}
