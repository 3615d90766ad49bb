-- Auto-routing of chest radiographs from Orthanc to the deepcovid-node listener.
--
-- Every instance Orthanc stores whose Modality is CR or DX (or the list given in
-- DEEPCOVID_ROUTED_MODALITIES, an Orthanc-side variable, not a node setting) is forwarded
-- (C-STORE) to the modality "deepcovid" of orthanc.json, i.e. the node. Instances the node itself sent -- its
-- results, which may carry Modality DX or CR too -- are skipped: forwarding them would send
-- the node's output back to the node, forever. They are recognised by the calling AE title of
-- the association they arrived on (origin.RemoteAet), which is the node's AE title, read from
-- the environment variable DEEPCOVID_AE_TITLE (the node's setting of the same name).
--
-- Forwarding is synchronous and best effort: if the node is down, Orthanc logs the failed
-- C-STORE and the instance stays in Orthanc; send it again later from Orthanc
-- (POST /modalities/deepcovid/store). See docs/deployment.md.

local NODE_MODALITY = 'deepcovid'
local NODE_AET = os.getenv('DEEPCOVID_AE_TITLE') or 'DEEPCOVID'
-- Modalities to forward, comma-separated (DEEPCOVID_ROUTED_MODALITIES, default CR,DX). A site
-- may route more and let the node's input gate reject, with a reason, what it cannot analyse.
local ROUTED_MODALITIES = {}
for m in string.gmatch(os.getenv('DEEPCOVID_ROUTED_MODALITIES') or 'CR,DX', '[^,%s]+') do
  ROUTED_MODALITIES[string.upper(m)] = true
end

local function trim(s)
  return (string.gsub(s or '', '^%s*(.-)%s*$', '%1'))
end

function OnStoredInstance(instanceId, tags, metadata, origin)
  if origin ~= nil and origin['RequestOrigin'] == 'DicomProtocol'
      and trim(origin['RemoteAet']) == NODE_AET then
    return  -- a result from the node itself: never route it back
  end
  local modality = string.upper(trim(tags['Modality']))
  if ROUTED_MODALITIES[modality] then
    print('deepcovid auto-routing: forwarding instance ' .. instanceId .. ' (' .. modality .. ')')
    SendToModality(instanceId, NODE_MODALITY)
  end
end
