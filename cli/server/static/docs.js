// A plain reader of /openapi.json: routes, parameters, bodies and answers (no CDN, works offline).
"use strict";

(async () => {
  const main = document.getElementById("routes");
  const el = (tag, text, cls) => { const e = document.createElement(tag); if (text != null) e.textContent = text; if (cls) e.className = cls; return e; };
  let spec;
  try {
    const response = await fetch("/openapi.json");
    spec = await response.json();
    if (!response.ok) throw new Error(spec.detail || response.status);
  } catch (err) {
    main.replaceChildren(el("p", "Could not load the schema: " + err));
    return;
  }
  const typeOf = (schema) => {
    if (!schema) return "";
    if (schema.$ref) return schema.$ref.split("/").pop();
    if (schema.anyOf) return schema.anyOf.map(typeOf).join(" | ");
    if (schema.type === "array") return typeOf(schema.items) + "[]";
    if (schema.enum) return schema.enum.map((v) => JSON.stringify(v)).join(" | ");
    return schema.type || "";
  };
  main.replaceChildren();
  for (const [path, operations] of Object.entries(spec.paths || {})) {
    for (const [method, op] of Object.entries(operations)) {
      const section = el("section");
      const title = el("h2");
      title.append(el("span", method.toUpperCase(), "method " + method), path);
      section.append(title);
      if (op.summary) section.append(el("p", op.summary));
      const params = op.parameters || [];
      if (params.length) {
        const table = el("table");
        const head = el("tr");
        head.append(el("th", "parameter"), el("th", "in"), el("th", "type"), el("th", "about"));
        table.append(head);
        for (const p of params) {
          const row = el("tr");
          row.append(el("td", p.name + (p.required ? " *" : "")), el("td", p.in), el("td", typeOf(p.schema)), el("td", (p.description || (p.schema && p.schema.description) || "")));
          table.append(row);
        }
        section.append(table);
      }
      if (op.requestBody) {
        const kinds = Object.entries(op.requestBody.content || {}).map(([type, c]) => type + ": " + typeOf(c.schema));
        section.append(el("p", "Body: " + kinds.join("; ")));
      }
      const answers = Object.entries(op.responses || {}).map(([code, r]) => code + " " + (r.description || ""));
      section.append(el("p", "Answers: " + answers.join(" · ")));
      main.append(section);
    }
  }
})();
