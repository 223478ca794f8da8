"""Memory: what an agent wrote (MEMORY.md, memory/**/*.md, memory.roots) and what was said in
its sessions, searchable offline with zero configuration.

The index (fased.memory.index) is derived and disposable: an SQLite FTS5 file of its own under
the home (memory/index.db), never state.db, rebuilt from the files and the log. Deleting it
costs a rebuild, nothing else; building it writes no events. fased.memory.search is the one
entry point the `memory_search` tool and `fased memory search` both call.
"""
