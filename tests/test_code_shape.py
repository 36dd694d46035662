"""The program file reads top to bottom: each section uses only the sections
above it, curses stays in the Terminal section, functions stay short, and the
module docstring's map names the sections in the order they come."""
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
