"""The drafts' prefix tree: each distinct prefix of the K drafts is one node (tree verification scores each
once, SpecInfer-style token trees)."""
from __future__ import annotations

import torch


def token_tree(tokens: torch.Tensor) -> tuple[list[int], list[int], list[int], torch.Tensor]:
    """Nodes of the drafts' prefix tree, root (the pending token) first: token, parent, depth of each node, and
    node_of [k, L+1], the node that ends each draft's prefix of length i (i = 0: the root)."""
    k, L = tokens.shape
    node_tok, parent, depth, index = [-1], [-1], [0], {(): 0}
    node_of = torch.zeros(k, L + 1, dtype=torch.long)
    for j, row in enumerate(tokens.tolist()):
        for i in range(1, L + 1):
            prefix = tuple(row[:i])
            if prefix not in index:
                index[prefix] = len(node_tok)
                node_tok.append(row[i - 1]), parent.append(index[prefix[:-1]]), depth.append(i)
            node_of[j, i] = index[prefix]
    return node_tok, parent, depth, node_of


def ancestors(parent: list[int]) -> torch.Tensor:
    """[n, n] bool: node i may attend to node j (j is i or an ancestor of i); parents come before children."""
    n = len(parent)
    allowed = torch.eye(n, dtype=torch.bool)
    for i in range(1, n):  # each row extends its parent's row
        allowed[i] |= allowed[parent[i]]
    return allowed


def distinct_prefixes(tokens: torch.Tensor) -> list[int]:
    """Distinct draft prefixes of each length 1..L among the rows of tokens [k, L] (the tree's nodes per depth)."""
    rows = [tuple(r) for r in tokens.tolist()]
    return [len({r[:d] for r in rows}) for d in range(1, tokens.shape[1] + 1)]
