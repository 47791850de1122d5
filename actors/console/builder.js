// The visual rule builder: nested AND/OR/NAND/NOR groups and conditions, edited in place on
// the rule's `when` (the same shape `apply` takes). Keyboard: Arrow Up/Down move the focus
// between items, Alt+Arrow Up/Down reorder, Alt+ArrowRight moves an item into the group just
// above it and Alt+ArrowLeft out of its group, Enter/Space press the focused button; the Up/Down
// buttons reorder too, and drag and drop moves an item anywhere (into another group too).
import { clear, h, select, uid } from "./dom.js";
import { valueRef } from "./rules.js";

const OPERATORS = ["equals", "notEquals", "greaterThan", "greaterThanEquals", "lessThan", "lessThanEquals",
  "between", "in", "notIn", "exists", "notExists", "contains", "notContains", "startsWith",
  "endsWith", "regex", "beforeDate", "afterDate", "betweenDate", "beforeTime", "afterTime",
  "betweenTime", "olderThanSeconds", "newerThanSeconds"];
const PAIRED = new Set(["between", "betweenDate", "betweenTime"]);
const UNARY = new Set(["exists", "notExists"]);

export function builder(root, lists, actionIds) {
  const box = h("div", { class: "builder" });
  let dragging = null;
  let focusPath = null;

  const redraw = (path) => {
    focusPath = path ?? null;
    clear(box).append(h("ul", { role: "tree", "aria-label": "conditions" }, groupItem(root, "when", 1, null, 0)));
    if (focusPath) {
      const el = box.querySelector(`[data-path="${focusPath}"]`);
      if (el) el.focus();
    }
  };

  // A drop target: any other item, but not one inside the dragged group (a group cannot go
  // into itself).
  const droppable = (target) => dragging && target !== dragging.path && !target.startsWith(`${dragging.path}.`);

  // The dragged item goes before the item dropped on (in that item's group: within a group
  // it takes that item's place), or at the end of an empty group.
  function transfer(list, index, parentPath) {
    const { list: from, index: at } = dragging;
    dragging = null;
    if (from === list) { if (at !== index) move(list, at, index, parentPath); return; }
    const [item] = from.splice(at, 1);
    list.splice(Math.min(index, list.length), 0, item);
    redraw(pathOf(root, item)); // the paths of the groups around it may have shifted
  }

  // The list holding the item at `path` ("when.items[0].items[2]") and its index there.
  function locate(path) {
    const indices = [...path.matchAll(/\.items\[(\d+)\]/g)].map((m) => Number(m[1]));
    let group = root;
    for (const i of indices.slice(0, -1)) group = group.items[i].data;
    return { list: group.items, index: indices[indices.length - 1] };
  }

  function pathOf(group, item, path = "when") {
    for (const [i, child] of (group.items || []).entries()) {
      const here = `${path}.items[${i}]`;
      if (child === item) return here;
      const inner = child.type === "group" ? pathOf(child.data, item, here) : null;
      if (inner) return inner;
    }
    return null;
  }

  function move(list, from, to, parentPath) {
    if (to < 0 || to >= list.length) return;
    const [item] = list.splice(from, 1);
    list.splice(to, 0, item);
    redraw(`${parentPath}.items[${to}]`);
  }

  function attached(node, label) {
    if (!actionIds.length) return null;
    const what = label === "when" ? "the whole rule" : label;
    const fs = h("fieldset", { class: "attached" }, h("legend", {}, `Actions when ${what} holds`));
    for (const id of actionIds) {
      const cb = h("input", { type: "checkbox", id: uid("act"), checked: (node.actions || []).includes(id) });
      cb.addEventListener("change", () => {
        const now = new Set(node.actions || []);
        if (cb.checked) now.add(id); else now.delete(id);
        node.actions = actionIds.filter((a) => now.has(a));
      });
      fs.append(h("span", { class: "check" }, cb, h("label", { for: cb.id }, id)));
    }
    return fs;
  }

  function controls(list, index, parentPath, label) {
    if (!list) return [];
    return [
      h("button", { type: "button", "aria-label": `Move ${label} up`, disabled: index === 0, onClick: () => move(list, index, index - 1, parentPath) }, "↑ Up"),
      h("button", { type: "button", "aria-label": `Move ${label} down`, disabled: index === list.length - 1, onClick: () => move(list, index, index + 1, parentPath) }, "↓ Down"),
      h("button", { type: "button", "aria-label": `Remove ${label}`, onClick: () => { list.splice(index, 1); redraw(parentPath); } }, "Remove"),
    ];
  }

  function treeItem(path, level, list, index, parentPath, content, label) {
    const li = h("li", { role: "treeitem", tabindex: "0", "data-path": path, "aria-level": level, "aria-label": label, class: "node" }, content);
    li.addEventListener("keydown", (e) => {
      if (e.target !== li) return;
      const items = [...box.querySelectorAll("[role=treeitem]")];
      const at = items.indexOf(li);
      if (e.altKey && list && (e.key === "ArrowUp" || e.key === "ArrowDown")) {
        e.preventDefault();
        move(list, index, index + (e.key === "ArrowUp" ? -1 : 1), parentPath);
      } else if (e.altKey && list && e.key === "ArrowRight") { // into the group just above
        e.preventDefault();
        const above = list[index - 1];
        if (above && above.type === "group") {
          const [item] = list.splice(index, 1);
          (above.data.items ??= []).push(item);
          redraw(pathOf(root, item));
        }
      } else if (e.altKey && list && e.key === "ArrowLeft" && parentPath !== "when") { // out of its group
        e.preventDefault();
        const outer = locate(parentPath);
        const [item] = list.splice(index, 1);
        outer.list.splice(outer.index + 1, 0, item);
        redraw(pathOf(root, item));
      } else if (e.key === "ArrowDown" && at < items.length - 1) { e.preventDefault(); items[at + 1].focus(); }
      else if (e.key === "ArrowUp" && at > 0) { e.preventDefault(); items[at - 1].focus(); }
      else if (e.key === "Home") { e.preventDefault(); items[0].focus(); }
      else if (e.key === "End") { e.preventDefault(); items[items.length - 1].focus(); }
    });
    if (list) {
      li.draggable = true;
      li.addEventListener("dragstart", (e) => {
        e.stopPropagation();
        dragging = { list, index, path };
        e.dataTransfer.effectAllowed = "move";
        e.dataTransfer.setData("text/plain", path);
      });
      li.addEventListener("dragover", (e) => { if (droppable(path)) { e.preventDefault(); e.stopPropagation(); } });
      li.addEventListener("drop", (e) => {
        if (!droppable(path)) return;
        e.preventDefault();
        e.stopPropagation();
        transfer(list, index, parentPath);
      });
    }
    return li;
  }

  function groupItem(group, path, level, list, index, parentPath) {
    group.items ??= [];
    const label = `${group.logic || "AND"} group ${path}`;
    const logic = select(["AND", "OR", "NAND", "NOR"], group.logic || "AND", { "aria-label": `Logic of ${path}` });
    logic.addEventListener("change", () => { group.logic = logic.value; });
    const children = h("ul", { role: "group", class: group.items.length ? "" : "empty-group" }, group.items.map((item, i) => {
      const p = `${path}.items[${i}]`;
      return item.type === "group"
        ? groupItem(item.data, p, level + 1, group.items, i, path)
        : conditionItem(item.data, p, level + 1, group.items, i, path);
    }));
    if (!group.items.length) {
      children.append(h("li", { class: "drop-here", "aria-hidden": "true" }, "(empty: drop an item here)"));
      children.addEventListener("dragover", (e) => { if (droppable(`${path}.items[0]`)) { e.preventDefault(); e.stopPropagation(); } });
      children.addEventListener("drop", (e) => {
        if (!droppable(`${path}.items[0]`)) return;
        e.preventDefault();
        e.stopPropagation();
        transfer(group.items, 0, path);
      });
    }
    const addCondition = h("button", { type: "button", onClick: () => {
      group.items.push({ type: "condition", data: { field: { type: "event", value: "" }, operator: "equals", value: { type: "literal", value: "" } } });
      redraw(`${path}.items[${group.items.length - 1}]`);
    } }, `Add condition to ${path}`);
    const addGroup = h("button", { type: "button", onClick: () => {
      group.items.push({ type: "group", data: { logic: "OR", items: [] } });
      redraw(`${path}.items[${group.items.length - 1}]`);
    } }, `Add group to ${path}`);
    const head = h("div", { class: "group-head" }, h("span", { class: "tag" }, "group"), logic, ...controls(list, index, parentPath, label));
    return treeItem(path, level, list, index, parentPath,
      [head, attached(group, path), children, h("div", { class: "row" }, addCondition, addGroup)], label);
  }

  function conditionItem(cond, path, level, list, index, parentPath) {
    const label = `condition ${path}`;
    const op = select(OPERATORS, cond.operator, { "aria-label": `Operator of ${path}` });
    const right = h("span", { class: "right" });
    // Only an operator the user changes reshapes the value: a loaded one is shown as it is
    // (a paired operator may take one value that resolves to a two-item list).
    const drawRight = () => {
      clear(right);
      if (UNARY.has(cond.operator) || cond.value === undefined || cond.value === null) return;
      if (Array.isArray(cond.value)) {
        right.append(...cond.value.map((v, i) => valueRef(v, `${path} ${i ? "high" : "low"}`, lists)));
      } else {
        right.append(valueRef(cond.value, `${path} value`, lists));
      }
    };
    op.addEventListener("change", () => {
      cond.operator = op.value;
      if (UNARY.has(op.value)) delete cond.value;
      else if (PAIRED.has(op.value) && !Array.isArray(cond.value)) {
        cond.value = [cond.value || { type: "literal", value: 0 }, { type: "literal", value: 0 }];
      } else if (!PAIRED.has(op.value) && (Array.isArray(cond.value) || !cond.value)) {
        cond.value = { type: "literal", value: "" };
      }
      drawRight();
    });
    drawRight();
    const row = h("div", { class: "cond" }, h("span", { class: "tag" }, "if"),
      valueRef(cond.field, `${path} field`, lists), op, right, ...controls(list, index, parentPath, label));
    return treeItem(path, level, list, index, parentPath, [row, attached(cond, path)], label);
  }

  redraw();
  return box;
}
