"""The program file reads top to bottom: each section uses only the sections
above it, helpers come before their users inside a section, curses stays in
the Terminal section, frames write nothing into the model, functions stay
short, and the module docstring's map names the sections in the order they
come."""
import ast
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE_PATH = os.path.join(ROOT, "fake_llm_training.py")
MAX_FUNCTION_LINES = 60
BANNER = re.compile(r"^#{20,}\n# (.+)\n#{20,}$", re.M)


def source():
    with open(SOURCE_PATH) as f:
        return f.read()


def sections(text):
    """[(first line number, title)] of every section banner, in file order."""
    return [(text[:m.start()].count("\n") + 1, m.group(1).strip()) for m in BANNER.finditer(text)]


def section_of(line, banners):
    """Index of the section that holds `line` (-1 above the first banner)."""
    index = -1
    for i, (first, _) in enumerate(banners):
        if first <= line:
            index = i
    return index


def top_level_definitions(tree):
    """{name: line} of every top-level def, class and assigned name."""
    names = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names[node.name] = node.lineno
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                for leaf in ast.walk(target):
                    if isinstance(leaf, ast.Name):
                        names.setdefault(leaf.id, node.lineno)
    return names


def local_names(node):
    """Names a top-level definition binds itself (parameters, assignments, inner
    definitions): a use of one of those is not a use of the module's name."""
    if not isinstance(node, (ast.FunctionDef, ast.ClassDef)):
        return set()
    bound = set()
    for leaf in ast.walk(node):
        if isinstance(leaf, ast.Name) and isinstance(leaf.ctx, ast.Store):
            bound.add(leaf.id)
        elif isinstance(leaf, ast.arg):
            bound.add(leaf.arg)
        elif isinstance(leaf, (ast.FunctionDef, ast.ClassDef)) and leaf is not node:
            bound.add(leaf.name)
    return bound


def test_each_section_uses_only_sections_above_it():
    text = source()
    tree, banners = ast.parse(text), sections(text)
    defined = top_level_definitions(tree)
    wrong = []
    for node in tree.body:
        home = section_of(node.lineno, banners)
        own = local_names(node)
        for leaf in ast.walk(node):
            if isinstance(leaf, ast.Name) and leaf.id in defined and leaf.id not in own:
                used = section_of(defined[leaf.id], banners)
                if used > home:
                    wrong.append("line %d (%s) uses %s from %s" % (leaf.lineno, banners[home][1], leaf.id,
                                                                   banners[used][1]))
    assert not wrong, "\n".join(sorted(set(wrong)))


def test_curses_is_imported_only_in_the_terminal_section():
    text = source()
    tree, banners = ast.parse(text), sections(text)
    places = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name == "curses" for a in node.names):
            places.append(banners[section_of(node.lineno, banners)][1])
        elif isinstance(node, ast.ImportFrom) and node.module == "curses":
            places.append(banners[section_of(node.lineno, banners)][1])
    assert places and set(places) == {"Terminal (the only curses code)"}, places


def test_no_function_is_longer_than_sixty_lines():
    long_ones = ["%s (line %d): %d lines" % (node.name, node.lineno, node.end_lineno - node.lineno + 1)
                 for node in ast.walk(ast.parse(source()))
                 if isinstance(node, ast.FunctionDef) and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long_ones, "\n".join(long_ones)


def test_the_docstring_map_names_the_sections_in_order():
    text = source()
    doc = ast.get_docstring(ast.parse(text))
    titles = [title for _, title in sections(text)]
    assert len(titles) >= 8
    map_text = " ".join(doc.split())
    at = 0
    for title in titles:
        short = title.split(" (")[0].lower()
        found = map_text.lower().find(short, at)
        assert found >= 0, "the docstring's map does not name %r (after position %d)" % (short, at)
        at = found + len(short)


def top_level_callables(tree):
    """{name: line} of every top-level def and class."""
    return {node.name: node.lineno for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}


# Helpers defined after their users inside a section that the file still has,
# as (user, helper) pairs: none.  A pair not listed fails the test; a listed
# pair that is gone fails it too, so the list can only shrink.
KNOWN_ORDER_DEBT = set()


def helpers_after_users(tree):
    """{(user, helper)}: a top-level def or class that uses a top-level def or
    class defined further down the file (module-level code aside: it runs
    after every definition above it)."""
    defined = top_level_callables(tree)
    pairs = set()
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            continue
        own = local_names(node)
        for leaf in ast.walk(node):
            if isinstance(leaf, ast.Name) and leaf.id not in own and defined.get(leaf.id, 0) > node.lineno:
                pairs.add((node.name, leaf.id))
    return pairs


def test_helpers_come_before_their_users():
    pairs = helpers_after_users(ast.parse(source()))
    new = ["%s uses %s, defined below it" % pair for pair in sorted(pairs - KNOWN_ORDER_DEBT)]
    assert not new, "\n".join(new)
    paid = ["%s no longer uses %s before it: remove the pair from KNOWN_ORDER_DEBT" % pair
            for pair in sorted(KNOWN_ORDER_DEBT - pairs)]
    assert not paid, "\n".join(paid)


def test_the_order_check_finds_a_helper_below_its_user():
    tree = ast.parse("def user(x):\n    return helper(x) + early(x)\n\n\ndef helper(x):\n    return x\n\n\n"
                     "def early(x):\n    return user(x)\n\n\nVALUE = helper(1)\n")
    assert helpers_after_users(tree) == {("user", "helper"), ("user", "early")}


# What a frame must not write into: the model's objects, by the names the
# Frames section gives them (a parameter or local called so, or reached
# through the ScreenState as state.rs, state.tl, state.cfg).
MODEL_NAMES = {"rs", "session", "tl", "timeline", "cfg"}
MODEL_VIA_STATE = {"rs", "tl", "cfg", "moment"}
MUTATING_METHODS = {"append", "extend", "insert", "pop", "popitem", "clear", "update", "setdefault", "remove",
                    "add", "discard", "sort", "reverse"}
# Frame writes into the model the file has today, (function, target): none since
# the memos moved to the screen loop's FrameCache.  The list only shrinks: a pair
# that is gone fails the test.
KNOWN_FRAME_WRITES = set()


def model_object(node):
    """'rs', 'state.tl', ... when the expression is a model object or inside one
    (rs.chart_cache[k], state.rs.x), else None."""
    chain = []
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        chain.append(node.attr if isinstance(node, ast.Attribute) else "[]")
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    chain.reverse()
    if node.id in MODEL_NAMES:
        return ".".join([node.id] + [c for c in chain[:1] if c != "[]"])
    if node.id == "state" and chain and chain[0] in MODEL_VIA_STATE and len(chain) > 1:
        return ".".join([node.id] + [c for c in chain[:2] if c != "[]"])
    return None


def writes_into_the_model(function):
    """{(function name, target)}: assignments, deletions, augmented assignments,
    setattr and mutating method calls whose target is a model object."""
    found = set()
    for node in ast.walk(function):
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        elif isinstance(node, ast.Delete):
            targets = node.targets
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "setattr":
            name = getattr(node.args[1], "value", getattr(node.args[1], "s", "?"))
            targets = [ast.Attribute(value=node.args[0], attr=str(name), ctx=ast.Store())]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                node.func.attr in MUTATING_METHODS:
            targets = [ast.Subscript(value=node.func.value, slice=None, ctx=ast.Store())]
        for target in targets:
            for leaf in (target.elts if isinstance(target, ast.Tuple) else [target]):
                if isinstance(leaf, (ast.Attribute, ast.Subscript)) and model_object(leaf):
                    found.add((function.name, model_object(leaf)))
    return found


def frame_writes(text):
    tree, banners = ast.parse(text), sections(text)
    frames = [i for i, (_, title) in enumerate(banners) if title.startswith("Frames")]
    assert len(frames) == 1, banners
    found = set()
    for node in tree.body:
        if section_of(node.lineno, banners) == frames[0] and isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            for function in ast.walk(node):
                if isinstance(function, ast.FunctionDef):
                    found |= writes_into_the_model(function)
    return found


def test_no_frame_writes_into_the_model():
    found = frame_writes(source())
    new = ["%s writes into %s" % pair for pair in sorted(found - KNOWN_FRAME_WRITES)]
    assert not new, "\n".join(new)
    gone = ["%s no longer writes into %s: remove it from KNOWN_FRAME_WRITES" % pair
            for pair in sorted(KNOWN_FRAME_WRITES - found)]
    assert not gone, "\n".join(gone)


def test_the_frame_write_check_sees_each_kind_of_write():
    text = ("#" * 30 + "\n# Frames (pure)\n" + "#" * 30 + "\n\n"
            "def a(state, rs, width):\n    rs.cache = {}\n    state.rs.memo[1] = 2\n    state.tl.seen += 1\n"
            "    setattr(state.cfg, 'x', 1)\n    rs.log.append(width)\n    rows = []\n    rows[0:] = [1]\n"
            "    state.width = width\n    return state.tl.moment(width)\n")
    assert frame_writes(text) == {("a", "rs.cache"), ("a", "state.rs.memo"), ("a", "state.tl.seen"),
                                  ("a", "state.cfg.x"), ("a", "rs.log")}
