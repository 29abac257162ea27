"""The resolved run: which chain, which blocks, why it ends there, and what each endpoint said
at start (the preflight in pipeline.run.preflight finds it out)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.config.endpoints import Endpoint


@dataclass(frozen=True)
class Probe:
    """What one endpoint answered at start; `error` is set when it did not answer."""

    endpoint: Endpoint
    chain_id: int | None = None
    head: int | None = None  # its latest block
    error: str = ""
    refused_tag: bool = False  # it answered, but knows no such block tag
    tag_block: int | None = None  # its safe/finalized block, when that tag was asked


@dataclass(frozen=True)
class Plan:
    """The resolved run: chain, inclusive block range, why it ends there, and the endpoints
    that failed to answer or lag behind."""

    chain_id: int
    from_block: int
    to_block: int
    silent: tuple[Probe, ...]
    heads: dict[str, int] = field(default_factory=dict)  # endpoint name -> its latest block
    behind: tuple[Probe, ...] = ()  # answered, but their head is before the end block
    end_reason: str = ""
    # The last block no reorg can reach as the run starts: the finalized block where it was
    # asked, else the head minus the chain's reorg depth (None: not known).
    settled: int | None = None

    @property
    def ends_settled(self) -> bool:
        """True when the run ends where no reorg can reach: its end needs no remembering."""
        return self.settled is not None and self.to_block <= self.settled
