// What OHIF would draw from a TID 1500 SR, read with dcmjs (the DICOM library OHIF uses).
//
// Usage: node sr_check.mjs REPORT.dcm  ->  JSON on stdout:
//   {"groups": [{"trackingIdentifier", "trackingUID", "finding", "evaluation",
//                "numbers": {name: value}, "textBox": [lines OHIF writes next to the region],
//                "label": the first of those lines (what names the region on the image),
//                "scoord": {"graphicType", "points": [[x, y], ...], "referencedSOPInstanceUID",
//                           "referencedFrameNumber"} | null}, ...],
//    "displayed": [indexes of the groups OHIF displays],
//    "shown": [the merged groups OHIF makes measurements of, as above],
//    "withoutRegion": how many merged groups have no SCOORD (OHIF 3.13's SR viewport fails),
//    "verdict": the report-level CODE COVID-19 of Qualitative Evaluations (C0034375, UMLS)}
//
// OHIF's rule, as in the prebuilt @ohif/app 3.13.2 (scripts/install-npm.sh), bundle
// dist/7248.bundle.*.js, modules extensions/cornerstone-dicom-sr/src/getSopClassHandlerModule.ts
// and tools/DICOMSRDisplayTool.ts:
// the Measurement Groups (DCM 125007) of Imaging Measurements (DCM 126010) are merged by their
// Tracking Unique Identifier (DCM 112040; a group without one makes OHIF throw); a group is
// displayed on an image only when it holds a SCOORD (or SCOORD3D) whose IMAGE child references
// the image (Referenced SOP Sequence). Groups without one are dropped from the viewport.
// _processTID1410Measurement makes the region's labels from the merged group's NUM items, in
// order ({label: concept CodeMeaning, value: `${NumericValue.toFixed(2)} ${unit CodeValue}`},
// _getLabelFromMeasuredValueSequence), then the first Finding Site (SCT 363698007:
// {label: "363698007", value: its CodeMeaning}); DICOMSRDisplayTool's text box is
// `${_labelToShorthand(label)}: ${value}` for at most 5 labels. Nothing else of the group is
// read for the text: not the Tracking Identifier, not the Finding (DCM 121071), not the
// qualitative evaluations, not TEXT items; they are reported here for the test to check them
// in the group.
import { readFileSync } from "node:fs";
import dcmjs from "dcmjs";

dcmjs.log.setLevel?.("error");

const one = (value) => (Array.isArray(value) ? value[0] : value);
const many = (value) => (value === undefined ? [] : Array.isArray(value) ? value : [value]);
const concept = (item) => one(item.ConceptNameCodeSequence) ?? {};
const is = (item, value, scheme) =>
  concept(item).CodeValue === value && concept(item).CodingSchemeDesignator === scheme;
// DICOMSRDisplayTool's SHORT_HAND_MAP: these labels are printed shortened.
const SHORT_HAND = {
  "Short Axis": "W: ",
  "Long Axis": "L: ",
  AREA: "Area: ",
  Length: "",
  CORNERSTONEFREETEXT: "",
};
const shorthand = (label) => SHORT_HAND[label] ?? label;

function scoordOf(group) {
  const scoord = many(group.ContentSequence).find(
    (item) => item.ValueType === "SCOORD" || item.ValueType === "SCOORD3D",
  );
  if (!scoord) return null;
  const image = many(scoord.ContentSequence).find((item) => item.ValueType === "IMAGE");
  const reference = image && one(image.ReferencedSOPSequence);
  if (!reference || !reference.ReferencedSOPInstanceUID) return null;
  const data = many(scoord.GraphicData).map(Number);
  const points = [];
  for (let i = 0; i + 1 < data.length; i += 2) points.push([data[i], data[i + 1]]);
  return {
    graphicType: scoord.GraphicType,
    points,
    referencedSOPInstanceUID: reference.ReferencedSOPInstanceUID,
    referencedFrameNumber: reference.ReferencedFrameNumber ?? null,
  };
}

function describe(group) {
  const items = many(group.ContentSequence);
  const finding = items.find((item) => item.ValueType === "CODE" && is(item, "121071", "DCM"));
  const tracking = items.find((item) => is(item, "112039", "DCM"));
  const evaluation = items.find(
    (item) => item.ValueType === "CODE" && is(item, "840539006", "SCT"),
  );
  const uid = items.find((item) => item.ValueType === "UIDREF" && is(item, "112040", "DCM"));
  const numbers = {};
  const labels = [];
  for (const item of items.filter((i) => i.ValueType === "NUM")) {
    const measured = one(item.MeasuredValueSequence);
    numbers[concept(item).CodeMeaning] = measured ? Number(measured.NumericValue) : null;
    if (measured) {
      const unit = one(measured.MeasurementUnitsCodeSequence)?.CodeValue;
      const value = measured.NumericValue ? Number(measured.NumericValue).toFixed(2) : "";
      labels.push(`${shorthand(concept(item).CodeMeaning)}: ${value} ${unit}`);
    }
  }
  const site = items.find((item) => is(item, "363698007", "SCT"));
  if (site) labels.push(`${shorthand("363698007")}: ${one(site.ConceptCodeSequence).CodeMeaning}`);
  const textBox = labels.slice(0, 5);
  return {
    trackingIdentifier: tracking?.TextValue ?? null,
    trackingUID: uid?.UID ?? null,
    textBox,
    label: textBox[0] ?? null,
    finding: finding ? one(finding.ConceptCodeSequence).CodeMeaning : null,
    evaluation: evaluation ? one(evaluation.ConceptCodeSequence).CodeMeaning : null,
    numbers,
    scoord: scoordOf(group),
  };
}

const file = process.argv[2];
const buffer = readFileSync(file);
const arrayBuffer = buffer.buffer.slice(buffer.byteOffset, buffer.byteOffset + buffer.byteLength);
const dicom = dcmjs.data.DicomMessage.readFile(arrayBuffer);
const report = dcmjs.data.DicomMetaDictionary.naturalizeDataset(dicom.dict);
const measurements = many(report.ContentSequence).find((item) => is(item, "126010", "DCM"));
const raw = many(measurements?.ContentSequence).filter((item) => is(item, "125007", "DCM"));
const groups = raw.map(describe);
// OHIF's merge: the content of all groups with one Tracking Unique Identifier, in order, the
// UIDREF once; what it displays and labels is the merged group.
const merged = new Map();
for (const group of raw) {
  const items = many(group.ContentSequence);
  const uid = items.find((item) => is(item, "112040", "DCM"))?.UID;
  if (!uid) continue;
  if (!merged.has(uid)) merged.set(uid, [...items]);
  else merged.get(uid).push(...items.filter((item) => !is(item, "112040", "DCM")));
}
const shown = [...merged.values()].map((items) => describe({ ContentSequence: items }));
const uids = groups.map((group) => group.trackingUID);
const displayed = groups
  .map((group, index) => (group.scoord && group.trackingUID ? index : -1))
  .filter((index) => index >= 0 && uids.indexOf(uids[index]) === index);
const withoutRegion = shown.filter((group) => !group.scoord).length;
const evaluations = many(report.ContentSequence).find((item) => is(item, "C0034375", "UMLS"));
const coded = many(evaluations?.ContentSequence).find(
  (item) => item.ValueType === "CODE" && is(item, "840539006", "SCT"),
);
const verdict = coded ? one(coded.ConceptCodeSequence).CodeMeaning : null;
process.stdout.write(JSON.stringify({ groups, displayed, shown, withoutRegion, verdict }) + "\n");
