//! BuildKit's status messages as readable log lines, in the shape of `docker build
//! --progress=plain`: each step (vertex) gets a number when it starts; its output lines,
//! `CACHED`, `DONE <seconds>` or `ERROR: <why>` follow under that number.

use std::collections::HashMap;

use bollard_buildkit_proto::google::protobuf::Timestamp;
use bollard_buildkit_proto::moby::buildkit::v1::StatusResponse;

#[derive(Default)]
struct Vertex {
    number: usize,
    announced: bool,
    finished: bool,
    /// Output not yet ended by a newline.
    partial: String,
}

#[derive(Default)]
pub struct Progress {
    vertices: HashMap<String, Vertex>,
    next_number: usize,
    /// The first step that failed, in BuildKit's words.
    failure: Option<String>,
}

impl Progress {
    /// The lines one status message adds to the log.
    pub fn apply(&mut self, status: StatusResponse) -> Vec<String> {
        let mut lines = Vec::new();
        for vertex in status.vertexes {
            let entry = self.vertex(&vertex.digest);
            let number = entry.number;
            if !entry.announced && (vertex.started.is_some() || vertex.cached || !vertex.error.is_empty()) {
                entry.announced = true;
                lines.push(format!("#{number} {}", vertex.name));
            }
            if entry.finished {
                continue;
            }
            if vertex.cached {
                entry.finished = true;
                lines.push(format!("#{number} CACHED"));
            } else if !vertex.error.is_empty() {
                entry.finished = true;
                flush(entry, &mut lines);
                lines.push(format!("#{number} ERROR: {}", vertex.error));
                // A cancelled sibling reports "context canceled"; the first error is the cause.
                self.failure
                    .get_or_insert_with(|| format!("{}: {}", vertex.name, vertex.error));
            } else if let Some(completed) = &vertex.completed {
                entry.finished = true;
                flush(entry, &mut lines);
                let took = vertex.started.as_ref().map(|started| seconds(started, completed));
                lines.push(match took {
                    Some(took) => format!("#{number} DONE {took:.1}s"),
                    None => format!("#{number} DONE"),
                });
            }
        }
        for status in status.statuses {
            if status.completed.is_some() && !status.name.is_empty() {
                let number = self.vertex(&status.vertex).number;
                let amount = match status.total {
                    0 if status.current > 0 => format!(" {}", size(status.current)),
                    0 => String::new(),
                    total => format!(" {} / {}", size(status.current), size(total)),
                };
                lines.push(format!("#{number} {}{amount} done", status.name));
            }
        }
        for log in status.logs {
            let entry = self.vertex(&log.vertex);
            let number = entry.number;
            entry.partial.push_str(&String::from_utf8_lossy(&log.msg));
            while let Some(end) = entry.partial.find('\n') {
                let line: String = entry.partial.drain(..=end).collect();
                lines.push(format!("#{number} {}", line.trim_end_matches(['\n', '\r'])));
            }
        }
        for warning in status.warnings {
            let number = self.vertex(&warning.vertex).number;
            lines.push(format!(
                "#{number} WARNING: {}",
                String::from_utf8_lossy(&warning.short)
            ));
        }
        lines
    }

    /// What failed, if a step did: the step and BuildKit's reason.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    fn vertex(&mut self, digest: &str) -> &mut Vertex {
        let next = &mut self.next_number;
        self.vertices.entry(digest.to_owned()).or_insert_with(|| {
            *next += 1;
            Vertex {
                number: *next,
                ..Vertex::default()
            }
        })
    }
}

fn flush(vertex: &mut Vertex, lines: &mut Vec<String>) {
    if !vertex.partial.is_empty() {
        lines.push(format!("#{} {}", vertex.number, std::mem::take(&mut vertex.partial)));
    }
}

fn seconds(from: &Timestamp, to: &Timestamp) -> f64 {
    (to.seconds - from.seconds) as f64 + f64::from(to.nanos - from.nanos) / 1e9
}

fn size(bytes: i64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1}MB", b as f64 / f64::from(1 << 20)),
        b if b >= 1 << 10 => format!("{:.1}kB", b as f64 / f64::from(1 << 10)),
        b => format!("{b}B"),
    }
}

#[cfg(test)]
mod tests {
    use bollard_buildkit_proto::moby::buildkit::v1::{Vertex as V, VertexLog};

    use super::*;

    fn at(seconds: i64, nanos: i32) -> Option<Timestamp> {
        Some(Timestamp { seconds, nanos })
    }

    fn vertex(digest: &str, name: &str) -> V {
        V {
            digest: digest.into(),
            name: name.into(),
            ..V::default()
        }
    }

    #[test]
    fn steps_are_numbered_and_their_output_cache_hits_and_times_are_lines() {
        let mut progress = Progress::default();
        let mut lines = progress.apply(StatusResponse {
            vertexes: vec![
                V {
                    started: at(10, 0),
                    ..vertex("a", "[1/2] FROM local/busybox:1")
                },
                V {
                    cached: true,
                    ..vertex("b", "[2/2] RUN make deps")
                },
            ],
            ..StatusResponse::default()
        });
        lines.extend(progress.apply(StatusResponse {
            vertexes: vec![V {
                started: at(10, 0),
                completed: at(11, 500_000_000),
                ..vertex("a", "[1/2] FROM local/busybox:1")
            }],
            logs: vec![
                VertexLog {
                    vertex: "a".into(),
                    msg: b"hello wo".to_vec(),
                    ..VertexLog::default()
                },
                VertexLog {
                    vertex: "a".into(),
                    msg: b"rld\nsecond\n".to_vec(),
                    ..VertexLog::default()
                },
            ],
            ..StatusResponse::default()
        }));
        assert_eq!(
            lines,
            [
                "#1 [1/2] FROM local/busybox:1",
                "#2 [2/2] RUN make deps",
                "#2 CACHED",
                "#1 DONE 1.5s",
                "#1 hello world",
                "#1 second",
            ]
        );
        assert_eq!(progress.failure(), None);
    }

    #[test]
    fn the_first_error_is_the_failure_and_a_step_ends_once() {
        let mut progress = Progress::default();
        let failed = V {
            started: at(1, 0),
            completed: at(2, 0),
            error: "process \"/bin/sh -c exit 3\" did not complete successfully: exit code: 3".into(),
            ..vertex("x", "[2/3] RUN exit 3")
        };
        let cancelled = V {
            started: at(1, 0),
            error: "context canceled".into(),
            ..vertex("y", "[3/3] RUN sleep 9")
        };
        let lines = progress.apply(StatusResponse {
            vertexes: vec![failed.clone(), cancelled],
            ..StatusResponse::default()
        });
        assert_eq!(lines[0], "#1 [2/3] RUN exit 3");
        assert!(lines[1].starts_with("#1 ERROR: process"), "{lines:?}");
        assert_eq!(
            progress.failure(),
            Some("[2/3] RUN exit 3: process \"/bin/sh -c exit 3\" did not complete successfully: exit code: 3")
        );
        let again = progress.apply(StatusResponse {
            vertexes: vec![failed],
            ..StatusResponse::default()
        });
        assert!(again.is_empty(), "{again:?}");
    }
}
