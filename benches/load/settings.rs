//! Which sections run, and how long: from the command line and the
//! environment.

/// A section of the harness, in the order a run measures them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    Unary,
    Tls,
    Stub,
    Balancer,
    Broadcast,
    Cpu,
    CallerRuntime,
    Propagation,
    Memory,
    Scale,
    Observe,
    ServerKit,
}

impl Section {
    pub(crate) const ALL: [Self; 12] = [
        Self::Unary,
        Self::Tls,
        Self::Stub,
        Self::Balancer,
        Self::Broadcast,
        Self::Cpu,
        Self::CallerRuntime,
        Self::Propagation,
        Self::Memory,
        Self::Scale,
        Self::Observe,
        Self::ServerKit,
    ];

    /// The name that selects it (`LOAD_SECTIONS`, or an argument).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Unary => "unary",
            Self::Tls => "tls",
            Self::Stub => "stub",
            Self::Balancer => "balancer",
            Self::Broadcast => "broadcast",
            Self::Cpu => "cpu",
            Self::CallerRuntime => "caller_runtime",
            Self::Propagation => "propagation",
            Self::Memory => "memory",
            Self::Scale => "scale",
            Self::Observe => "observe",
            Self::ServerKit => "server_kit",
        }
    }

    /// Whether it calls the echo servers.
    pub(crate) fn needs_servers(self) -> bool {
        !matches!(self, Self::Propagation | Self::Memory | Self::ServerKit)
    }

    /// Whether it runs on the shared etcd and actix system (the server kit
    /// section builds a runtime of its own).
    pub(crate) fn needs_system(self) -> bool {
        self != Self::ServerKit
    }
}

/// The settings of one run.
pub(crate) struct Settings {
    pub(crate) sections: Vec<Section>,
    /// Rounds of the sections that interleave rows.
    pub(crate) rounds: usize,
    /// Paired rounds of the server kit section.
    pub(crate) kit_rounds: usize,
    /// Worker threads of the echo servers' runtime.
    pub(crate) server_threads: usize,
    /// Nodes of the scale section's service.
    pub(crate) scale_nodes: usize,
}

impl Settings {
    /// Sections from the arguments that are not flags (`cargo bench --bench
    /// load -- scale cpu`), else from `LOAD_SECTIONS` (comma-separated), else
    /// all; counts from `LOAD_ROUNDS`, `LOAD_KIT_ROUNDS`, `LOAD_SERVER_THREADS`,
    /// `LOAD_SCALE_NODES`.
    ///
    /// # Panics
    ///
    /// On an unknown section name, naming the known ones.
    pub(crate) fn from_env(default_kit_rounds: usize, default_scale_nodes: usize) -> Self {
        let number = |key: &str, default: usize| {
            std::env::var(key)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .filter(|n| *n > 0)
                .unwrap_or(default)
        };
        let mut wanted: Vec<String> = std::env::args()
            .skip(1)
            .filter(|a| !a.starts_with('-'))
            .collect();
        if wanted.is_empty() {
            if let Ok(list) = std::env::var("LOAD_SECTIONS") {
                wanted = list
                    .split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect();
            }
        }
        for w in &wanted {
            assert!(
                Section::ALL.iter().any(|s| s.name() == w),
                "unknown section `{w}`; expected some of {:?}",
                Section::ALL.map(Section::name)
            );
        }
        let sections = Section::ALL
            .into_iter()
            .filter(|s| wanted.is_empty() || wanted.iter().any(|w| w == s.name()))
            .collect();
        Self {
            sections,
            rounds: number("LOAD_ROUNDS", 20),
            kit_rounds: number("LOAD_KIT_ROUNDS", default_kit_rounds),
            server_threads: number("LOAD_SERVER_THREADS", 1),
            scale_nodes: number("LOAD_SCALE_NODES", default_scale_nodes),
        }
    }

    pub(crate) fn runs(&self, section: Section) -> bool {
        self.sections.contains(&section)
    }
}
